// The sidecar under load, part of `npm run bench`: a real `cdp watch --http` process, and the
// load from this one (on a 2-core machine: one core each).
// - reads/s of GET /v1/config/{app} (autocannon, 10 s, 3 rounds), beside the same load on a bare
//   Node HTTP server (bench/bare-server.ts) in turn: the loader shares the 2 cores, so that is the
//   ceiling; the share is the median of the rounds' own;
// - append -> delivery at 100, 1,000 and 5,000 concurrent event-stream clients: each change line
//   carries the monotonic time of its append, and every client notes when its event arrives. This
//   counts from the append, before the journal write, so it is an upper bound of the time from the
//   write; and the clients share this one process, so the last one's time includes reading all the
//   others' streams first.
import { fork, spawn, type ChildProcess } from "node:child_process";
import { appendFileSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { initDataDir } from "../src/store/datadir.js";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import autocannon from "autocannon";

const here = (path: string) => fileURLToPath(new URL(path, import.meta.url));
const CLI = here("../src/cli.js");
const SCHEMAS = here("../../bench/schemas");
const SUBSCRIBERS = process.env.SUBS ? [Number(process.env.SUBS)] : [100, 1000, 5000];
const CHANGES = 50;
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const WARM_SECONDS = 2;

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

/** The baseline server (bench/bare-server.ts), in its own process: its URL, and a way to stop it. */
async function bareServer(): Promise<{ url: string; stop(): void }> {
  const child = fork(here("./bare-server.js"), { stdio: "ignore" });
  const port = await new Promise<number>((resolve) => child.once("message", (message) => resolve(message as number)));
  return { url: `http://127.0.0.1:${port}`, stop: () => child.disconnect() };
}

async function readsPerSecond(url: string, seconds = 10): Promise<number> {
  const result = await autocannon({ url: `${url}/v1/config/bench`, connections: 64, duration: seconds, pipelining: 1 });
  if (result.non2xx > 0 || result.errors > 0) throw new Error(`reads failed: ${result.non2xx} non-2xx, ${result.errors} errors`);
  return result.requests.average;
}

/**
 * Open `count` event streams; resolves once each has its first bytes, with a way to wait for
 * revision `r` everywhere. Each is a bare socket that sends the GET and scans what arrives with a
 * regular expression (no HTTP client, no JSON.parse): the clients share this one process and one
 * core, and their own work per event is part of what is measured, so it is kept to the least.
 */
async function subscribers(url: string, count: number) {
  const { hostname, port } = new URL(url);
  const latencies: number[] = [];
  const heard = new Array<number>(count).fill(0);
  // how many clients have yet to hear the awaited revision (counted as each hears it, not by a scan of all)
  let waiting: { revision: number; missing: number; resolve: () => void } | undefined;
  const check = () => {
    if (waiting && waiting.missing === 0) {
      const { resolve } = waiting;
      waiting = undefined;
      resolve();
    }
  };
  const sockets: net.Socket[] = [];
  await Promise.all(
    Array.from(
      { length: count },
      (_, i) =>
        new Promise<void>((resolve, reject) => {
          const socket = net.connect(Number(port), hostname, () => socket.write(`GET /v1/events HTTP/1.1\r\nHost: ${hostname}:${port}\r\n\r\n`));
          socket.setEncoding("latin1");
          socket.once("data", () => resolve());
          socket.on("data", (chunk: string) => {
            for (const match of chunk.matchAll(/^data: \{"revision":(\d+),.*?"value":"(\d+)"/gm)) {
              latencies.push(Number(process.hrtime.bigint() - BigInt(match[2]!)) / 1e6);
              const revision = Number(match[1]);
              if (waiting && heard[i]! < waiting.revision && revision >= waiting.revision) waiting.missing--;
              heard[i] = revision;
            }
            check();
          });
          socket.on("error", reject);
          sockets.push(socket);
        }),
    ),
  );
  return {
    latencies,
    until: (revision: number) =>
      new Promise<void>((resolve) => {
        waiting = { revision, missing: heard.filter((heardUpTo) => heardUpTo < revision).length, resolve };
        check();
      }),
    close: () => {
      for (const socket of sockets) socket.destroy();
    },
  };
}

async function main(): Promise<void> {
  const reads: number[] = [];
  const bare: number[] = [];
  const p50 = new Map<number, number[]>(SUBSCRIBERS.map((count) => [count, []]));
  const p99 = new Map<number, number[]>(SUBSCRIBERS.map((count) => [count, []]));
  const baseline = await bareServer();
  for (let round = 0; round < ROUNDS; round++) {
    const server = await sidecar();
    // both warmed alike (code compiled, heap grown), then measured in turn, which one first
    // alternating by round: the machine's load drifts, and 10 s of one then 10 s of the other
    // would give the drift to one side
    for (const url of [server.url, baseline.url]) await readsPerSecond(url, WARM_SECONDS);
    const measure = async (url: string, into: number[]) => into.push(await readsPerSecond(url));
    if (round % 2 === 0) {
      await measure(baseline.url, bare);
      await measure(server.url, reads);
    } else {
      await measure(server.url, reads);
      await measure(baseline.url, bare);
    }
    let revision = 0;
    for (const count of SUBSCRIBERS) {
      const clients = await subscribers(server.url, count);
      for (let i = 0; i < CHANGES; i++) {
        appendFileSync(join(server.dir, "cdp.new"), `bench:t:${process.hrtime.bigint()}\n`);
        await clients.until(++revision);
      }
      p50.get(count)!.push(percentile(clients.latencies, 50));
      p99.get(count)!.push(percentile(clients.latencies, 99));
      clients.close();
    }
    await stop(server);
    process.stderr.write(`sidecar round ${round + 1} of ${ROUNDS} done\n`);
  }
  baseline.stop();
  const m = (values: number[]) => percentile(values, 50);
  const spread = (values: number[]) => `${Math.min(...values).toFixed(1)}-${Math.max(...values).toFixed(1)}`;
  const perSecond = (values: number[]) => `${Math.round(m(values)).toLocaleString("en")} reads/s`;
  // each round's share (its two figures taken minutes apart at most), and their median
  const shares = reads.map((value, i) => value / bare[i]!);
  const share = m(shares);
  const percent = (value: number) => `${Math.round(100 * value)}%`;
  console.log("\n| sidecar figure | cdp | baseline (bare Node HTTP) | goal | met |\n| --- | --- | --- | --- | --- |");
  console.log(
    `| GET /v1/config/{app} (64 connections) | ${perSecond(reads)} | ${perSecond(bare)} (cdp ${percent(share)}, rounds ${percent(Math.min(...shares))}-${percent(Math.max(...shares))}) | ≥ 90% of bare | ${share >= 0.9 ? "yes" : "**no**"} |`,
  );
  for (const count of SUBSCRIBERS) {
    const clients = count.toLocaleString("en");
    console.log(`| append→event at ${clients} subscribers, p50 | ${m(p50.get(count)!).toFixed(1)} ms (${spread(p50.get(count)!)}) | | | |`);
    const goal = count === 5000 ? 100 : count === 1000 ? 50 : undefined;
    const met = goal === undefined ? "" : m(p99.get(count)!) <= goal ? "yes" : "**no**";
    console.log(
      `| append→event at ${clients} subscribers, p99 | ${m(p99.get(count)!).toFixed(1)} ms (${spread(p99.get(count)!)}) | | ${goal === undefined ? "" : `≤ ${goal} ms`} | ${met} |`,
    );
  }
  console.log(
    `\nmedians of ${ROUNDS} rounds (their range in brackets); each round: a fresh cdp, ${WARM_SECONDS} s of reads on each server to warm it, 10 s of reads on each (in turn, the first alternating), then ${CHANGES} changes to each number of streams.`,
  );
  const byCount = (map: Map<number, number[]>) => Object.fromEntries(map);
  writeFileSync(
    here("../../bench/results-sidecar.json"),
    `${JSON.stringify({ date: new Date().toISOString(), reads, bare, p50: byCount(p50), p99: byCount(p99) }, null, 2)}\n`,
  );
}

await main();
