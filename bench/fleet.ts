// The fleet under load, part of `npm run bench`: a 3-member etcd cluster on loopback, hosts A
// and B as `cdp watch --cluster` processes, host C embedded in this process (its subscriber is
// where changes are timed).
// - append on A -> subscriber call on C, one change at a time (p50/p99);
// - committed changes per second: 10,000 lines appended at once on A; then 10,000 on each of A,
//   B and C at once, until C has applied them all (three rounds, each beside bare etcd's; medians);
// beside the same figures of bare etcd, with the same client: a put on one follower heard by a
// watch on the other (sampled in turn with cdp's), and head-checked transactions each packing
// 1,000 records in one value, as cdp's commits do: one log one at a time (the honest limit of a
// fleet's one log), and 8 logs in flight. The goals (issues 16 and 23) compare the two. Between
// them, the protocol's floor: three processes doing only what a fleet's protocol asks of its
// hosts (bench/floor-host.ts), which says how much of the gap is cdp's own work and how much the
// machine's.
import { fork, type ChildProcess } from "node:child_process";
import { appendFileSync, existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { packCommit } from "../src/fleet/log.js";
import { startCdp, type Cdp } from "../src/index.js";
import { bareClients, burstRecords, type BareClient } from "./bare.js";
import { ETCD, leaderOf, startEtcdCluster, type EtcdCluster } from "./etcd.js";
import { cpuOf, stopAll, watcher } from "./hosts.js";

const here = (path: string) => fileURLToPath(new URL(path, import.meta.url));
const SCHEMAS = here("../../bench/schemas");
const FLOOR_HOST = here("floor-host.js");
const SAMPLES = 300;
const BURST = 10_000;
const ROUNDS = 3;
const PACKED = 1000; // records per transaction, as cdp's commits pack them
const BARE_RECORDS = 30_000;

/**
 * Bare etcd's put → watch, one sample at a time: a put on one follower heard by a watch on the
 * other (a member that is the leader answers sooner, and which one is depends on the run; cdp's
 * hosts talk to any member). Sampled in turn with cdp's, so that both see the same machine.
 */
async function barePutWatch(
  etcd: EtcdCluster,
  client: (endpoint: string) => BareClient,
): Promise<{ name: string; sample(): Promise<number>; close(): Promise<void> }> {
  const leader = await leaderOf(etcd);
  const [first, second] = etcd.endpoints.filter((_, i) => i !== leader) as [string, string];
  const [writer, reader] = [client(first), client(second)];
  let heard: ((ms: number) => void) | undefined;
  const watch = await reader.watch("/baseline/t", (value) => heard?.(Number(process.hrtime.bigint() - BigInt(value)) / 1e6));
  return {
    name: writer.name,
    async sample() {
      const arrived = new Promise<number>((resolve) => (heard = resolve));
      await writer.put("/baseline/t", String(process.hrtime.bigint()));
      return arrived;
    },
    async close() {
      await watch.cancel();
      writer.close();
      reader.close();
    },
  };
}

/**
 * Bare etcd's committed records per second written as cdp commits them: head-checked transactions
 * of one value packing 1,000 records (packed and deflated by cdp's own code: the same bytes), one log written one
 * transaction at a time (a fleet's log is one sequence), and 8 logs in flight at once.
 */
async function bareCommits(etcd: EtcdCluster, keys: string, client: (endpoint: string) => BareClient): Promise<{ sequential: number; pipelined: number }> {
  const leader = await leaderOf(etcd);
  const writer = client(etcd.endpoints.find((_, i) => i !== leader)!);
  const time = new Date().toISOString();
  try {
    // one log: each transaction checks its head, then writes 1,000 records as one value and the new head
    const sequence = async (name: string, changes: number) => {
      for (let head = 0; head < changes; head += PACKED) {
        const records = burstRecords("a", head, PACKED, time);
        const key = `/baseline/${name}/log/${String(head + 1).padStart(12, "0")}`;
        if (!(await writer.commit(`/baseline/${name}/head`, head, key, packCommit(records, true), head + PACKED)))
          throw new Error("baseline transaction refused");
      }
    };
    let started = performance.now();
    await sequence(`${keys}/one`, BARE_RECORDS);
    const sequential = BARE_RECORDS / ((performance.now() - started) / 1000);
    started = performance.now();
    await Promise.all(Array.from({ length: 8 }, (_, i) => sequence(`${keys}/eight-${i}`, BARE_RECORDS)));
    const pipelined = (8 * BARE_RECORDS) / ((performance.now() - started) / 1000);
    return { sequential, pipelined };
  } finally {
    writer.close();
  }
}

/**
 * The protocol's floor: three processes, one per member, each committing `records` to one log as
 * a fleet's hosts do (head-checked, 1,000 per transaction, refused when another got there first)
 * and reading every commit back, with none of a host's own work (bench/floor-host.ts), through
 * `bareClients[client]`. What a
 * fleet of three hosts writing at once could reach on this machine if cdp cost nothing.
 */
async function floorFleet(etcd: EtcdCluster, keys: string, client: number, records: number) {
  const hosts = etcd.endpoints.map((endpoint, i) =>
    fork(FLOOR_HOST, [String(client), endpoint, `/floor/${keys}`, `h${i}`, String(records), String(3 * records)], { stdio: "inherit" }),
  );
  const said = (host: ChildProcess) => new Promise((resolve, reject) => host.once("message", resolve).once("exit", reject));
  try {
    await Promise.all(hosts.map(said));
    const etcdCpu = () => etcd.members.reduce((sum, member) => sum + cpuOf(member.child.pid!), 0);
    const [before, started] = [etcdCpu(), performance.now()];
    const done = hosts.map(said) as Promise<{ cpuMs: number }>[];
    for (const host of hosts) host.send("go");
    const spent = await Promise.all(done);
    const elapsed = performance.now() - started;
    return { rate: (3 * records) / (elapsed / 1000), etcd: etcdCpu() - before, hosts: spent.map((host) => host.cpuMs) };
  } finally {
    await stopAll(hosts);
  }
}

const percentile = (values: number[], p: number) => values.slice().sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor((p / 100) * values.length))]!;

async function main(): Promise<void> {
  if (!existsSync(ETCD)) {
    console.log(`\nfleet figures not taken: no etcd at ${ETCD} (apt-get install etcd-server, or set ETCD)`);
    return;
  }
  const root = await mkdtemp(join(tmpdir(), "cdp-bench-fleet-"));
  const etcd = await startEtcdCluster(join(root, "etcd"), 3);
  const bareLatency = await Promise.all(bareClients.map((client) => barePutWatch(etcd, client)));
  const [a, b, c] = ["a", "b", "c"].map((name) => join(root, name)) as [string, string, string];
  const children = [await watcher(a, SCHEMAS, etcd.endpoints, "a"), await watcher(b, SCHEMAS, etcd.endpoints, "b")];
  const host: Cdp = await startCdp({
    init: true,
    dir: c,
    schemas: SCHEMAS,
    logger: pino({ level: "warn" }, pino.destination({ dest: "/dev/null", sync: true })),
    cluster: { endpoints: etcd.endpoints, prefix: "/cdp/bench", host: "c" },
  });
  try {
    // A -> C latency, one change at a time, each beside one bare put -> watch
    const latencies: number[] = [];
    const bareLatencies: number[][] = bareLatency.map(() => []);
    let heard: (() => void) | undefined;
    host.subscribe("bench", "t", ({ value }) => {
      latencies.push(Number(process.hrtime.bigint() - BigInt(value as string)) / 1e6);
      heard?.();
    });
    const settle = () => new Promise((resolve) => setTimeout(resolve, 5)); // hosts A and B journal the change too
    for (let i = 0; i < SAMPLES; i++) {
      for (const [i, bare] of bareLatency.entries()) {
        bareLatencies[i]!.push(await bare.sample());
        await settle();
      }
      const arrived = new Promise<void>((resolve) => (heard = resolve));
      appendFileSync(join(a, "cdp.new"), `bench:t:${process.hrtime.bigint()}\n`);
      await arrived;
      await settle();
    }
    for (const bare of bareLatency) await bare.close();

    const untilRevision = (revision: number) =>
      new Promise<void>((resolve) => {
        const check = () => (host.revision >= revision ? resolve() : setTimeout(check, 5));
        check();
      });
    const lines = (from: number) => Array.from({ length: BURST }, (_, i) => `bench:n:${from + i}\n`).join("");
    // the bursts, in rounds beside bare etcd's transactions (each round its own keys): the medians are reported
    const rounds: {
      oneHost: number;
      threeHosts: number;
      bare: { sequential: number; pipelined: number };
      floor: number;
      byClient: { sequential: number; pipelined: number; floor: number }[];
    }[] = [];
    // where the CPU goes, per record: etcd's members writing bare (one log), and during the three-host bursts etcd's and each host's
    const etcdPids = etcd.members.map((member) => member.child.pid!);
    const hostPids = [...children.map((child) => child.pid!), process.pid];
    const cpu = (pids: number[]) => pids.reduce((sum, pid) => sum + cpuOf(pid), 0);
    const spent = { bareEtcd: 0, bareRecords: 0, etcd: 0, hosts: hostPids.map(() => 0), records: 0, floorEtcd: 0, floorHosts: 0, floorRecords: 0 };
    for (let round = 0, revision = SAMPLES; round < ROUNDS; round++) {
      const byClient = [];
      for (const [i, client] of bareClients.entries()) {
        const before = cpu(etcdPids);
        const { sequential, pipelined } = await bareCommits(etcd, `round-${round}-${i}`, client);
        spent.bareEtcd += cpu(etcdPids) - before;
        spent.bareRecords += 9 * BARE_RECORDS; // one log, then 8
        const floor = await floorFleet(etcd, `round-${round}-${i}`, i, BURST);
        spent.floorEtcd += floor.etcd;
        spent.floorHosts += floor.hosts.reduce((a, b) => a + b);
        spent.floorRecords += 3 * BURST;
        byClient.push({ sequential, pipelined, floor: floor.rate });
      }
      // the honest limit: whichever client wrote faster
      const bare = { sequential: Math.max(...byClient.map((b) => b.sequential)), pipelined: Math.max(...byClient.map((b) => b.pipelined)) };
      let started = performance.now();
      appendFileSync(join(a, "cdp.new"), lines(1));
      await untilRevision((revision += BURST));
      const oneHost = BURST / ((performance.now() - started) / 1000);
      started = performance.now();
      const [etcdBefore, hostsBefore] = [cpu(etcdPids), hostPids.map(cpuOf)];
      for (const dir of [a, b, c]) appendFileSync(join(dir, "cdp.new"), lines(1));
      await untilRevision((revision += 3 * BURST));
      const threeHosts = (3 * BURST) / ((performance.now() - started) / 1000);
      await new Promise((resolve) => setTimeout(resolve, 100)); // hosts A and B finish applying the last records
      spent.etcd += cpu(etcdPids) - etcdBefore;
      for (const [i, pid] of hostPids.entries()) spent.hosts[i]! += cpuOf(pid) - hostsBefore[i]!;
      spent.records += 3 * BURST;
      rounds.push({ oneHost, threeHosts, bare, floor: Math.max(...byClient.map((b) => b.floor)), byClient });
    }
    const median = (values: number[]) => percentile(values, 50);
    const oneHost = median(rounds.map((r) => r.oneHost));
    const threeHosts = median(rounds.map((r) => r.threeHosts));
    const bare = { sequential: median(rounds.map((r) => r.bare.sequential)), pipelined: median(rounds.map((r) => r.bare.pipelined)) };
    const shares = rounds.map((r) => r.threeHosts / r.bare.sequential);
    const floorShares = rounds.map((r) => r.floor / r.bare.sequential);
    const share = median(shares);
    // a share of bare etcd: the median of the rounds, their spread, and the first round's (cold code)
    const percent = (value: number) => `${Math.round(100 * value)}%`;
    const ofRounds = (shares: number[]) =>
      `${percent(median(shares))} (median of ${ROUNDS} rounds, ${percent(Math.min(...shares))}-${percent(Math.max(...shares))}; the first, with cold code, ${percent(shares[0]!)})`;

    const [p50, p99] = [percentile(latencies, 50), percentile(latencies, 99)];
    // each client's percentiles; the ratio is to the faster
    const [bareP50, bareP99] = [Math.min(...bareLatencies.map((l) => percentile(l, 50))), Math.min(...bareLatencies.map((l) => percentile(l, 99)))];
    const clients = bareClients.map((_, i) => ({ name: bareLatency[i]!.name, latency: bareLatencies[i]!, rounds: rounds.map((r) => r.byClient[i]!) }));
    const rate = (value: number) => `${Math.round(value).toLocaleString("en")}/s`;
    const ms = (value: number) => `${value.toFixed(2)} ms`;
    const rows = [
      ["append on A → subscriber on C, p50", ms(p50), `${ms(bareP50)} (put → watch)`, `${(p50 / bareP50).toFixed(1)}×`, "≤ 2×", p50 <= 2 * bareP50],
      ["append on A → subscriber on C, p99", ms(p99), `${ms(bareP99)} (put → watch)`, `${(p99 / bareP99).toFixed(1)}×`, "≤ 3×", p99 <= 3 * bareP99],
      [`committed changes/s, ${BURST.toLocaleString("en")} lines on one host`, rate(oneHost), `${rate(bare.pipelined)} (8 logs in flight)`, "", "", undefined],
      [
        `committed changes/s, ${BURST.toLocaleString("en")} lines on each of three hosts at once`,
        rate(threeHosts),
        `${rate(bare.sequential)} (one log, 1,000 records per transaction)`,
        ofRounds(shares),
        "≥ 50%",
        share >= 0.5,
      ],
      [
        "the protocol's floor: three processes at once committing as hosts do and reading the log, with no host's own work",
        rate(median(rounds.map((r) => r.floor))),
        "",
        ofRounds(floorShares),
        "",
        undefined,
      ],
    ] as const;
    console.log(
      "\n| fleet figure (3-member etcd on loopback) | cdp | bare etcd, the faster client | ratio | goal | met |\n| --- | --- | --- | --- | --- | --- |",
    );
    for (const [name, value, baseline, ratio, goal, met] of rows)
      console.log(`| ${name} | ${value} | ${baseline} | ${ratio} | ${goal} | ${met === undefined ? "" : met ? "yes" : "no"} |`);
    const us = (ms: number, records: number) => `${((1000 * ms) / records).toFixed(1)} µs`;
    console.log(
      `\nCPU per record (from /proc, 10 ms ticks, ${ROUNDS} rounds): bare etcd's three members ${us(spent.bareEtcd, spent.bareRecords)}; ` +
        `during the three-host bursts etcd's members ${us(spent.etcd, spent.records)}, hosts A / B / C ${spent.hosts.map((ms) => us(ms, spent.records)).join(" / ")} (C: this process); ` +
        `at the floor etcd's members ${us(spent.floorEtcd, spent.floorRecords)}, each process ${us(spent.floorHosts / 3, spent.floorRecords)}`,
    );
    console.log("\nbare etcd by client (the table takes the faster):");
    for (const { name, latency, rounds: each } of clients) {
      const sequential = median(each.map((r) => r.sequential));
      const pipelined = median(each.map((r) => r.pipelined));
      const floor = median(each.map((r) => r.floor));
      console.log(
        `  ${name}: put → watch p50 ${ms(percentile(latency, 50))}, p99 ${ms(percentile(latency, 99))}; one log ${rate(sequential)}, 8 logs ${rate(pipelined)}; floor ${rate(floor)}`,
      );
    }
  } finally {
    await host.stop();
    await stopAll(children);
    await etcd.stop();
    await rm(root, { recursive: true, force: true });
  }
}

await main();
