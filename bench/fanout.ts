// One fleet's fan-out, part of `npm run bench`: 16 hosts on a 3-member etcd cluster on loopback,
// 15 of them `cdp watch --cluster` processes and the 16th embedded in this process (its
// subscriber is where changes are timed).
// - append on host 1 → subscriber on host 16, one change at a time (p50/p99), sampled in turn
//   with bare etcd's fan-out: a put on one follower heard by 16 watches, each on its own client
//   (its own connection), as the 16 hosts each watch — the time to one given watch, and to the last;
// - each host process's memory once the fleet has been idle for a while (RSS, its private part,
//   and its proportional share of what the 16 processes share, PSS).
import { appendFileSync, existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { startCdp } from "../src/index.js";
import { Etcd, prefixEnd } from "../src/fleet/etcd.js";
import { bareClients, type BareClient } from "./bare.js";
import { ETCD, leaderOf, startEtcdCluster, type EtcdCluster } from "./etcd.js";
import { memoryOf, stopAll, watcher } from "./hosts.js";

const SCHEMAS = fileURLToPath(new URL("../../bench/schemas", import.meta.url));
const HOSTS = 16;
const SAMPLES = 200;
const IDLE_MS = 30_000;

const percentile = (values: number[], p: number) => values.slice().sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor((p / 100) * values.length))]!;
const now = () => Number(process.hrtime.bigint()) / 1e6;

/** Bare etcd's fan-out: a put on one follower, heard by `watchers` watches on their own clients (spread over the members). */
async function bareFanOut(etcd: EtcdCluster, watchers: number, client: (endpoint: string) => BareClient) {
  const leader = await leaderOf(etcd);
  const followers = etcd.endpoints.filter((_, i) => i !== leader);
  const writer = client(followers[0]!);
  const readers = Array.from({ length: watchers }, (_, i) => client(etcd.endpoints[i % etcd.endpoints.length]!));
  let heard: ((at: number) => void)[] = [];
  const watches = await Promise.all(readers.map((reader, i) => reader.watch("/baseline/fan", () => heard[i]?.(now()))));
  return {
    name: writer.name,
    /** ms from the put to the last watch, and to the one on the same member as host 16's client. */
    async sample(): Promise<{ one: number; last: number }> {
      const arrivals = readers.map((_, i) => new Promise<number>((resolve) => (heard[i] = resolve)));
      const started = now();
      await writer.put("/baseline/fan", String(started));
      const times = await Promise.all(arrivals);
      heard = [];
      return { one: times[times.length - 1]! - started, last: Math.max(...times) - started };
    },
    async close() {
      await Promise.all(watches.map((watch) => watch.cancel()));
      for (const each of [writer, ...readers]) each.close();
    },
  };
}

async function main(): Promise<void> {
  if (!existsSync(ETCD)) {
    console.log(`\nfan-out figures not taken: no etcd at ${ETCD} (apt-get install etcd-server, or set ETCD)`);
    return;
  }
  const root = await mkdtemp(join(tmpdir(), "cdp-bench-fanout-"));
  const etcd = await startEtcdCluster(join(root, "etcd"), 3);
  const children = [];
  let host: Awaited<ReturnType<typeof startCdp>> | undefined;
  try {
    for (let i = 1; i < HOSTS; i++) children.push(await watcher(join(root, `h${i}`), SCHEMAS, etcd.endpoints, `h${i}`, "/cdp/fanout"));
    host = await startCdp({
      init: true,
      dir: join(root, `h${HOSTS}`),
      schemas: SCHEMAS,
      logger: pino({ level: "warn" }, pino.destination({ dest: "/dev/null", sync: true })),
      cluster: { endpoints: etcd.endpoints, prefix: "/cdp/fanout", host: `h${HOSTS}` },
    });
    const bares = await Promise.all(bareClients.map((client) => bareFanOut(etcd, HOSTS, client)));
    const latencies: number[] = [];
    // where the time goes: when etcd publishes each change (a watch of the fleet's log in this
    // process, on the last member) splits host 1's part (inbox, judging, commit) from the fan-out's
    const published: number[] = [];
    const probe = new Etcd({ endpoints: etcd.endpoints.slice(-1) });
    await probe.watch("/cdp/fanout/log/", prefixEnd("/cdp/fanout/log/"), {
      put: ({ value }) => {
        const sent = /bench:t:(\d+)/.exec(value)?.[1];
        if (sent) published.push(Number(process.hrtime.bigint() - BigInt(sent)) / 1e6);
      },
      connected: () => undefined,
      error: () => undefined,
    });
    const bareOnes: number[][] = bares.map(() => []);
    const bareLasts: number[][] = bares.map(() => []);
    let heard: (() => void) | undefined;
    host.subscribe("bench", "t", ({ value }) => {
      latencies.push(Number(process.hrtime.bigint() - BigInt(value as string)) / 1e6);
      heard?.();
    });
    // every host journals each change: the next sample waits until the machine is quiet again
    const settle = () => new Promise((resolve) => setTimeout(resolve, 30));
    for (let i = 0; i < SAMPLES; i++) {
      for (const [i, bare] of bares.entries()) {
        const { one, last } = await bare.sample();
        bareOnes[i]!.push(one);
        bareLasts[i]!.push(last);
        await settle();
      }
      const arrived = new Promise<void>((resolve) => (heard = resolve));
      appendFileSync(join(root, "h1", "cdp.new"), `bench:t:${process.hrtime.bigint()}\n`);
      await arrived;
      await settle();
    }
    for (const bare of bares) await bare.close();
    probe.close();
    process.stderr.write(`fan-out: ${SAMPLES} samples taken; the fleet idles ${IDLE_MS / 1000} s before its memory is read\n`);
    await new Promise((resolve) => setTimeout(resolve, IDLE_MS));
    const memory = children.map((child) => memoryOf(child.pid!));

    const ms = (value: number) => `${value.toFixed(2)} ms`;
    const mb = (values: number[]) => `${Math.round(percentile(values, 50))} MB (${Math.round(Math.min(...values))}-${Math.round(Math.max(...values))})`;
    const [p50, p99] = [percentile(latencies, 50), percentile(latencies, 99)];
    // the baseline is the faster client's
    const fastest = bareOnes.map((ones) => percentile(ones, 50)).reduce((best, p50, i, all) => (p50 < all[best]! ? i : best), 0);
    const [bareOne, bareLast] = [bareOnes[fastest]!, bareLasts[fastest]!];
    const [oneP50, oneP99, lastP50] = [percentile(bareOne, 50), percentile(bareOne, 99), percentile(bareLast, 50)];
    const rss = percentile(
      memory.map((m) => m.rss),
      50,
    );
    console.log(
      `\n| fan-out figure (${HOSTS} hosts, 3-member etcd on loopback) | cdp | bare etcd | ratio | goal | met |\n| --- | --- | --- | --- | --- | --- |`,
    );
    console.log(
      `| append on host 1 → subscriber on host ${HOSTS}, p50 | ${ms(p50)} | ${ms(oneP50)} (put → one of ${HOSTS} watches; the last ${ms(lastP50)}) | ${(p50 / oneP50).toFixed(1)}× | ≤ 2× | ${p50 <= 2 * oneP50 ? "yes" : "**no**"} |`,
    );
    console.log(`| append on host 1 → subscriber on host ${HOSTS}, p99 | ${ms(p99)} | ${ms(oneP99)} | ${(p99 / oneP99).toFixed(1)}× | | |`);
    console.log(
      `| idle RSS per host process (median, range of ${children.length}) | ${mb(memory.map((m) => m.rss))} | | | ≤ 70 MB | ${rss <= 70 ? "yes" : "**no**"} |`,
    );
    console.log(`| its private part (anonymous pages) | ${mb(memory.map((m) => m.anon))} | | | | |`);
    console.log(`| its proportional share (PSS: shared pages split between processes) | ${mb(memory.map((m) => m.pss))} | | | | |`);
    console.log(`\n${SAMPLES} samples, each cdp change beside one bare put per client, 30 ms apart; memory after ${IDLE_MS / 1000} s idle.`);
    console.log(
      `  of cdp's p50: append on host 1 → its record published by etcd ${ms(percentile(published, 50))} (heard by a watch in this process), the rest on the way to host ${HOSTS}'s subscriber`,
    );
    for (const [i, bare] of bares.entries())
      console.log(
        `  bare etcd by ${bare.name}: put → one watch p50 ${ms(percentile(bareOnes[i]!, 50))}, p99 ${ms(percentile(bareOnes[i]!, 99))}; the last ${ms(percentile(bareLasts[i]!, 50))}${i === fastest ? " (the table's)" : ""}`,
      );
  } finally {
    await host?.stop();
    await stopAll(children);
    await etcd.stop();
    await rm(root, { recursive: true, force: true });
  }
}

await main();
