// The sidecar under load, part of `npm run bench`: a real `cdp watch --http` process, and the
// load from this one (on a 2-core machine: one core each).
// - reads/s of GET /v1/config/{app} (autocannon, 10 s, 3 rounds), beside the same load on a bare
//   Node HTTP server (bench/bare-server.ts): the loader shares the 2 cores, so that is the ceiling;
// - append -> delivery at 1,000 concurrent event-stream clients: each change line carries the
//   monotonic time of its append, and every client notes when its event arrives. This counts
//   from the append, before the journal write, so it is an upper bound of the time from the write.
import { fork, spawn, type ChildProcess } from "node:child_process";
import { appendFileSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { initDataDir } from "../src/datadir.js";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import autocannon from "autocannon";

const here = (path: string) => fileURLToPath(new URL(path, import.meta.url));
const CLI = here("../src/cli.js");
const SCHEMAS = here("../../bench/schemas");
const SUBSCRIBERS = 1000;
const CHANGES = 50;
const ROUNDS = 3;

const percentile = (values: number[], p: number) => values.slice().sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor((p / 100) * values.length))]!;

async function sidecar(): Promise<{ url: string; dir: string; child: ChildProcess }> {
  const dir = await mkdtemp(join(tmpdir(), "cdp-bench-"));
  await initDataDir(dir, SCHEMAS);
  const child = spawn(process.execPath, [CLI, "watch", "--dir", dir, "--schemas", SCHEMAS, "--http", "127.0.0.1:0"], { stdio: ["ignore", "pipe", "inherit"] });
  let output = "";
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout!.on("data", (data: Buffer) => {
      if (output.length > 100_000) return; // the URL is in the first lines; the rest is drained unread
      output += data.toString();
      const match = /"url":"([^"]+)"/.exec(output);
      if (match) resolve(match[1]!);
    });
    child.on("exit", (code) => reject(new Error(`cdp watch exited ${code}: ${output}`)));
  });
  // it listens before the journal is read: wait until it serves
  while ((await fetch(`${url}/readyz`)).status !== 200) await new Promise((resolve) => setTimeout(resolve, 20));
  return { url, dir, child };
}

async function stop({ child, dir }: { child: ChildProcess; dir: string }): Promise<void> {
  const exited = new Promise((resolve) => child.on("exit", resolve));
  child.kill("SIGTERM");
  await exited;
  await rm(dir, { recursive: true });
}

async function bareReadsPerSecond(): Promise<number> {
  const child = fork(here("./bare-server.js"), { stdio: "ignore" });
  const port = await new Promise<number>((resolve) => child.once("message", (message) => resolve(message as number)));
  const reads = await readsPerSecond(`http://127.0.0.1:${port}`);
  child.disconnect();
  return reads;
}

async function readsPerSecond(url: string): Promise<number> {
  const result = await autocannon({ url: `${url}/v1/config/bench`, connections: 64, duration: 10, pipelining: 1 });
  if (result.non2xx > 0 || result.errors > 0) throw new Error(`reads failed: ${result.non2xx} non-2xx, ${result.errors} errors`);
  return result.requests.average;
}

/** Open `count` event streams; resolves once each has its first comment, with a way to wait for revision `r` everywhere. */
async function subscribers(url: string, count: number) {
  const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
  const latencies: number[] = [];
  const heard = new Array<number>(count).fill(0);
  let waiting: { revision: number; resolve: () => void } | undefined;
  const check = () => {
    if (waiting && heard.every((revision) => revision >= waiting!.revision)) {
      const { resolve } = waiting;
      waiting = undefined;
      resolve();
    }
  };
  const requests: http.ClientRequest[] = [];
  await Promise.all(
    Array.from(
      { length: count },
      (_, i) =>
        new Promise<void>((resolve, reject) => {
          const request = http.get(`${url}/v1/events`, { agent }, (res) => {
            res.setEncoding("utf8");
            res.once("data", () => resolve());
            res.on("data", (chunk: string) => {
              // read with a regular expression, not JSON.parse: the client's own work, on one
              // thread for 1,000 streams, is part of what is measured and should be small
              for (const match of chunk.matchAll(/^data: \{"revision":(\d+),.*?"value":"(\d+)"/gm)) {
                latencies.push(Number(process.hrtime.bigint() - BigInt(match[2]!)) / 1e6);
                heard[i] = Number(match[1]);
              }
              check();
            });
          });
          request.on("error", reject);
          requests.push(request);
        }),
    ),
  );
  return {
    latencies,
    until: (revision: number) => new Promise<void>((resolve) => ((waiting = { revision, resolve }), check())),
    close: () => requests.forEach((request) => request.destroy()),
  };
}

async function main(): Promise<void> {
  const reads: number[] = [];
  const bare: number[] = [];
  const p50: number[] = [];
  const p99: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    bare.push(await bareReadsPerSecond());
    const server = await sidecar();
    reads.push(await readsPerSecond(server.url));
    const clients = await subscribers(server.url, SUBSCRIBERS);
    for (let revision = 1; revision <= CHANGES; revision++) {
      appendFileSync(join(server.dir, "cdp.new"), `bench:t:${process.hrtime.bigint()}\n`);
      await clients.until(revision);
    }
    p50.push(percentile(clients.latencies, 50));
    p99.push(percentile(clients.latencies, 99));
    clients.close();
    await stop(server);
    process.stderr.write(`sidecar round ${round + 1} of ${ROUNDS} done\n`);
  }
  const m = (values: number[]) => percentile(values, 50);
  const perSecond = (values: number[]) => `${Math.round(m(values)).toLocaleString("en")} reads/s`;
  const rows = [
    ["GET /v1/config/{app} (64 connections)", perSecond(reads), perSecond(bare), "≥ 20,000 reads/s", m(reads) >= 20_000],
    [`append→event at ${SUBSCRIBERS.toLocaleString("en")} subscribers p50`, `${m(p50).toFixed(1)} ms`, "", "", true],
    [`append→event at ${SUBSCRIBERS.toLocaleString("en")} subscribers p99`, `${m(p99).toFixed(1)} ms`, "", "≤ 50 ms", m(p99) <= 50],
  ] as const;
  console.log("\n| sidecar figure | cdp | baseline (bare Node HTTP) | goal | met |\n| --- | --- | --- | --- | --- |");
  for (const [name, value, base, goal, met] of rows) console.log(`| ${name} | ${value} | ${base} | ${goal} | ${goal ? (met ? "yes" : "**no**") : ""} |`);
  console.log(`\nmedians of ${ROUNDS} rounds; each round: 10 s of reads, then ${CHANGES} changes to ${SUBSCRIBERS} streams.`);
  writeFileSync(here("../../bench/results-sidecar.json"), `${JSON.stringify({ date: new Date().toISOString(), reads, bare, p50, p99 }, null, 2)}\n`);
}

await main();
