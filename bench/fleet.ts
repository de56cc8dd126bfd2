// The fleet under load, part of `npm run bench`: a 3-member etcd cluster on loopback, hosts A
// and B as `cdp watch --cluster` processes, host C embedded in this process (its subscriber is
// where changes are timed).
// - append on A -> subscriber call on C, one change at a time (p50/p99);
// - committed changes per second: 3,000 lines appended at once on A; then 3,000 on each of A, B
//   and C at once, until C has applied them all.
import { spawn, type ChildProcess } from "node:child_process";
import { appendFileSync, existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { initDataDir } from "../src/datadir.js";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { startCdp, type Cdp } from "../src/index.js";
import { ETCD, startEtcdCluster } from "./etcd.js";

const here = (path: string) => fileURLToPath(new URL(path, import.meta.url));
const CLI = here("../src/cli.js");
const SCHEMAS = here("../../bench/schemas");
const SAMPLES = 300;
const BURST = 3000;

const percentile = (values: number[], p: number) => values.slice().sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor((p / 100) * values.length))]!;

/** A `cdp watch --cluster` process, once it says it is watching. */
async function watcher(dir: string, cluster: string[], name: string): Promise<ChildProcess> {
  await initDataDir(dir, SCHEMAS);
  const args = ["watch", "--dir", dir, "--schemas", SCHEMAS, "--cluster", `etcd://${cluster.map((url) => new URL(url).host).join(",")}`];
  const child = spawn(process.execPath, [CLI, ...args, "--cluster-prefix", "/cdp/bench", "--cluster-host", name], { stdio: ["ignore", "pipe", "inherit"] });
  let output = "";
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on("data", (data: Buffer) => {
      if (output.length > 100_000) return; // drained unread once it is watching
      output += data.toString();
      if (output.includes("cdp is watching")) resolve();
    });
    child.on("exit", (code) => reject(new Error(`cdp watch exited ${code}: ${output}`)));
  });
  return child;
}

async function main(): Promise<void> {
  if (!existsSync(ETCD)) {
    console.log(`\nfleet figures not taken: no etcd at ${ETCD} (apt-get install etcd-server, or set ETCD)`);
    return;
  }
  const root = await mkdtemp(join(tmpdir(), "cdp-bench-fleet-"));
  const etcd = await startEtcdCluster(join(root, "etcd"), 3);
  const [a, b, c] = ["a", "b", "c"].map((name) => join(root, name)) as [string, string, string];
  const children = [await watcher(a, etcd.endpoints, "a"), await watcher(b, etcd.endpoints, "b")];
  const host: Cdp = await startCdp({
    init: true,
    dir: c,
    schemas: SCHEMAS,
    logger: pino({ level: "warn" }, pino.destination({ dest: "/dev/null", sync: true })),
    cluster: { endpoints: etcd.endpoints, prefix: "/cdp/bench", host: "c" },
  });
  try {
    // A -> C latency, one change at a time
    const latencies: number[] = [];
    let heard: (() => void) | undefined;
    host.subscribe("bench", "t", ({ value }) => {
      latencies.push(Number(process.hrtime.bigint() - BigInt(value as string)) / 1e6);
      heard?.();
    });
    for (let i = 0; i < SAMPLES; i++) {
      const arrived = new Promise<void>((resolve) => (heard = resolve));
      appendFileSync(join(a, "cdp.new"), `bench:t:${process.hrtime.bigint()}\n`);
      await arrived;
    }

    const untilRevision = (revision: number) =>
      new Promise<void>((resolve) => {
        const check = () => (host.revision >= revision ? resolve() : setTimeout(check, 5));
        check();
      });
    const lines = (from: number) => Array.from({ length: BURST }, (_, i) => `bench:n:${from + i}\n`).join("");
    let started = performance.now();
    appendFileSync(join(a, "cdp.new"), lines(1));
    await untilRevision(SAMPLES + BURST);
    const oneHost = BURST / ((performance.now() - started) / 1000);

    started = performance.now();
    for (const dir of [a, b, c]) appendFileSync(join(dir, "cdp.new"), lines(1));
    await untilRevision(SAMPLES + 4 * BURST);
    const threeHosts = (3 * BURST) / ((performance.now() - started) / 1000);

    const rows = [
      ["append on A → subscriber on C, p50", `${percentile(latencies, 50).toFixed(1)} ms`],
      ["append on A → subscriber on C, p99", `${percentile(latencies, 99).toFixed(1)} ms`],
      [`committed changes/s, ${BURST.toLocaleString("en")} lines on one host`, `${Math.round(oneHost).toLocaleString("en")}/s`],
      [`committed changes/s, ${BURST.toLocaleString("en")} lines on each of three hosts at once`, `${Math.round(threeHosts).toLocaleString("en")}/s`],
    ];
    console.log("\n| fleet figure (3-member etcd on loopback) | cdp |\n| --- | --- |");
    for (const [name, value] of rows) console.log(`| ${name} | ${value} |`);
  } finally {
    await host.stop();
    for (const child of children) child.kill("SIGTERM");
    await Promise.all(children.map((child) => new Promise((resolve) => (child.exitCode === null ? child.on("exit", resolve) : resolve(null)))));
    await etcd.stop();
    await rm(root, { recursive: true, force: true });
  }
}

await main();
