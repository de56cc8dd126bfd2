// Fleets under faults: the etcd leader killed in a 3-member cluster, hosts on mixed schema
// versions during a rolling upgrade, and etcd unreachable. Apart from fleet.test.ts so that the two run side by side.
import { appendFile, cp, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { leaderOf, startEtcd, startFleetHost } from "./etcd.js";
import { afterThisTest, FLEET_TIMEOUT, getConfig, journalOf, runCdp, SCHEMAS, startWatch, tempDir, waitUntil, dataDir, appendAndWait } from "./helpers.js";

/** Hosts a and b on `cluster` under `prefix`, both at the fleet's first change (ticker.interval 1001): their data directories. */
async function twoHostsInStep(cluster: Awaited<ReturnType<typeof startEtcd>>, prefix: string): Promise<[string, string]> {
  const [a, b] = await Promise.all(["a", "b"].map(async (name) => (await startFleetHost(cluster, name, { prefix })).dir));
  await appendAndWait(a!, "ticker:interval:1001\n", 1);
  await waitUntil(async () => (await journalOf(b!)).length === 1);
  return [a!, b!];
}

describe("cdp watch --cluster on a 3-member etcd", { timeout: FLEET_TIMEOUT }, () => {
  it("loses no accepted change when the etcd leader is killed, and takes changes again after the election", async () => {
    const cluster = await startEtcd(3);
    const hosts = await Promise.all(["a", "b", "c"].map(async (name) => (await startFleetHost(cluster, name, { prefix: "/cdp/failover" })).dir));
    const [a, b, c] = hosts as [string, string, string];
    await appendFile(join(a, "cdp.new"), Array.from({ length: 50 }, (_, i) => `ticker:interval:${1001 + i}\n`).join(""));
    for (const dir of hosts) await waitUntil(async () => (await journalOf(dir)).length === 50);

    const leader = cluster.members[await leaderOf(cluster)]!;
    leader.child.kill("SIGKILL");
    await appendFile(join(b, "cdp.new"), Array.from({ length: 50 }, (_, i) => `ticker:interval:${2001 + i}\n`).join(""));
    await appendFile(join(c, "cdp.new"), "ticker:name:after-the-election\n");
    for (const dir of hosts) await waitUntil(async () => (await journalOf(dir)).length === 101, 60_000);
    const journals = await Promise.all(hosts.map((dir) => journalOf(dir)));
    expect(journals[1]).toEqual(journals[0]);
    expect(journals[2]).toEqual(journals[0]);
    expect(journals[0]!.filter((line) => line.startsWith("ticker:interval:"))).toHaveLength(100);
    expect(await getConfig(a, "ticker.name")).toBe("after-the-election");
  }, 90_000);

  it("moves its commits and its watch to the next member when the member it talks to is killed", async () => {
    const cluster = await startEtcd(3);
    const hosts = await twoHostsInStep(cluster, "/cdp/member");
    const [a, b] = hosts;
    cluster.members[0]!.child.kill("SIGKILL"); // every host talks to the first member it is given
    await appendFile(join(b, "cdp.new"), Array.from({ length: 20 }, (_, i) => `ticker:interval:${2001 + i}\n`).join(""));
    await appendFile(join(a, "cdp.new"), "ticker:name:after\n");
    for (const dir of hosts) await waitUntil(async () => (await journalOf(dir)).length === 22, 60_000);
    const [journalA, journalB] = await Promise.all(hosts.map((dir) => journalOf(dir)));
    expect(journalB).toEqual(journalA);
    expect(journalA!.filter((line) => line.startsWith("ticker:interval:"))).toHaveLength(21);
  }, 90_000);

  it("moves on from a member that hangs with its connections open (stopped): commits time out, the quiet watch is moved", async () => {
    const cluster = await startEtcd(3);
    const hosts = await twoHostsInStep(cluster, "/cdp/hang");
    const [a, b] = hosts;
    const hung = cluster.members[0]!; // every host talks to the first member it is given
    hung.child.kill("SIGSTOP");
    afterThisTest(async () => void hung.child.kill("SIGCONT"));
    await appendFile(join(a, "cdp.new"), "ticker:interval:1002\n");
    // a's commit moves on after 10 s without an answer; b's watch hears nothing until its watchdog reads the head
    for (const dir of hosts) await waitUntil(async () => (await journalOf(dir)).length === 2, 60_000);
    expect(await getConfig(b, "ticker.interval")).toBe(1002);
  }, 120_000);

  it("applies each line once when the etcd leader is killed in the middle of a burst (a commit's answer may be lost)", async () => {
    const cluster = await startEtcd(3);
    const [a, b] = [(await startFleetHost(cluster, "a", { prefix: "/cdp/burst" })).dir, (await startFleetHost(cluster, "b", { prefix: "/cdp/burst" })).dir];
    const lines = Array.from({ length: 3000 }, (_, i) => `ticker:name:n${i}`);
    await appendFile(join(a, "cdp.new"), `${lines.join("\n")}\n`);
    await waitUntil(async () => (await journalOf(b)).length >= 300, 30_000);
    cluster.members[await leaderOf(cluster)]!.child.kill("SIGKILL");
    for (const dir of [a, b]) await waitUntil(async () => (await journalOf(dir)).length >= 3000, 60_000);
    await waitUntil(async () => (await getConfig(a, "ticker.name")) === "n2999", 30_000);
    for (const dir of [a, b]) expect(await journalOf(dir)).toEqual(lines); // each once, in order
  }, 120_000);
});

describe("cdp watch --cluster with mixed schema versions (a rolling upgrade)", { timeout: FLEET_TIMEOUT }, () => {
  it("reports a change its schemas refuse, keeps the last good value, and converges once its schemas catch up", async () => {
    const { endpoints } = await startEtcd();
    const cluster = `etcd://${new URL(endpoints[0]!).host}`;
    // host b still runs the old schema, where the interval may not exceed 5000
    const oldSchemas = await tempDir();
    await cp(SCHEMAS, oldSchemas, { recursive: true });
    const tickerSchema = join(oldSchemas, "ticker.schema.json");
    const schema = JSON.parse(await readFile(tickerSchema, "utf8")) as { properties: { interval: Record<string, unknown> } };
    schema.properties.interval.exclusiveMaximum = 5000;
    await writeFile(tickerSchema, JSON.stringify(schema));

    const a = await tempDir();
    await startWatch(a, ["--cluster", cluster, "--cluster-prefix", "/cdp/mixed", "--cluster-host", "a"]);
    const b = await dataDir();
    const args = (schemas: string) => [
      "watch",
      "--dir",
      b,
      "--schemas",
      schemas,
      "--cluster",
      cluster,
      "--cluster-prefix",
      "/cdp/mixed",
      "--cluster-host",
      "b",
      "--http",
      "127.0.0.1:0",
    ];
    let watchB = runCdp(args(oldSchemas));
    await waitUntil(() => watchB.output().includes("cdp is watching"));
    const urlB = /"url":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(watchB.output())![1]!;

    await appendFile(join(a, "cdp.new"), "ticker:interval:6000\nticker:name:new\n");
    await waitUntil(async () => (await journalOf(a)).length === 2);
    await waitUntil(() => watchB.output().includes("this host's schemas refuse a change the fleet committed"));
    await waitUntil(async () => ((await getConfig(b, "ticker.name", oldSchemas)) as string) === "new");
    expect(await getConfig(b, "ticker.interval", oldSchemas)).toBe(1000); // its last good value
    expect(await getConfig(a, "ticker.interval")).toBe(6000);
    const ready = await fetch(`${urlB}/readyz`);
    expect(ready.status).toBe(503);
    expect(await ready.json()).toEqual({ ready: false, reason: "this host's schemas refuse fleet changes to ticker.interval" });
    expect(await (await fetch(`${urlB}/metrics`)).text()).toMatch(/^cdp_diverged_keys 1$/m);

    // the upgrade reaches b: restarted with the new schemas, it takes the change it refused
    watchB.child.kill("SIGTERM");
    expect(await watchB.exited).toBe(0);
    watchB = runCdp(args(SCHEMAS));
    await waitUntil(() => watchB.output().includes("cdp is watching"));
    expect(await getConfig(b, "ticker.interval")).toBe(6000);
    expect(await journalOf(b)).toEqual(await journalOf(a));
    const urlB2 = /"url":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(watchB.output())![1]!;
    expect(await (await fetch(`${urlB2}/readyz`)).json()).toEqual({ ready: true, revision: 2 });
  });
});

describe("cdp watch --cluster while etcd is unreachable", { timeout: FLEET_TIMEOUT }, () => {
  it("keeps serving its configuration while etcd is unreachable, leaves new lines queued, and commits them when it is back", async () => {
    const etcd = await startEtcd();
    const dir = await dataDir();
    const cluster = `etcd://${new URL(etcd.endpoints[0]!).host}`;
    const watch = await startWatch(dir, ["--cluster", cluster, "--cluster-prefix", "/cdp/outage", "--http", "127.0.0.1:0"]);
    const url = /"url":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(watch.output())![1]!;
    await appendAndWait(dir, "ticker:interval:1500\n", 1);

    const member = etcd.members[0]!;
    member.child.kill("SIGKILL");
    await new Promise((resolve) => member.child.once("exit", resolve));
    await appendFile(join(dir, "cdp.new"), "ticker:interval:1600\n");
    await waitUntil(async () => (await fetch(`${url}/readyz`)).status === 503);
    expect(((await (await fetch(`${url}/readyz`)).json()) as { reason: string }).reason).toMatch(/^cannot reach etcd/);
    expect(await (await fetch(`${url}/v1/config/ticker/interval`)).json()).toBe(1500); // still served
    expect(await journalOf(dir)).toEqual(["ticker:interval:1500"]); // nothing applied here alone

    await member.restart();
    await waitUntil(async () => (await journalOf(dir)).length === 2, 30_000);
    expect(await (await fetch(`${url}/v1/config/ticker/interval`)).json()).toBe(1600);
    await waitUntil(async () => (await fetch(`${url}/readyz`)).status === 200);
  }, 60_000);

  it("starts and serves its journal's configuration while etcd is down, and reads its inbox once it has caught up", async () => {
    const etcd = await startEtcd();
    const dir = await dataDir();
    const cluster = `etcd://${new URL(etcd.endpoints[0]!).host}`;
    const args = ["watch", "--dir", dir, "--schemas", SCHEMAS, "--cluster", cluster, "--cluster-prefix", "/cdp/down", "--http", "127.0.0.1:0"];
    const first = await startWatch(dir, args.slice(5));
    await appendAndWait(dir, "ticker:interval:1500\n", 1);
    first.child.kill("SIGTERM");
    expect(await first.exited).toBe(0);
    const member = etcd.members[0]!;
    member.child.kill("SIGKILL");
    await new Promise((resolve) => member.child.once("exit", resolve));

    const second = runCdp(args);
    await waitUntil(() => second.output().includes("cannot reach etcd: serving this host's last configuration"));
    const url = /"url":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(second.output())![1]!;
    expect(await (await fetch(`${url}/v1/config/ticker/interval`)).json()).toBe(1500);
    expect(((await (await fetch(`${url}/readyz`)).json()) as { reason: string }).reason).toMatch(/^cannot reach etcd/);
    await appendFile(join(dir, "cdp.new"), "ticker:interval:1600\n");
    expect(second.output()).not.toContain("cdp is watching");

    await member.restart();
    await waitUntil(async () => (await journalOf(dir)).length === 2, 30_000);
    expect(second.output()).toContain("caught up with the fleet");
    expect(await (await fetch(`${url}/v1/config/ticker/interval`)).json()).toBe(1600);
    second.child.kill("SIGTERM");
    expect(await second.exited).toBe(0);
  }, 60_000);

  it("stops cleanly on SIGTERM while it waits for etcd", async () => {
    const etcd = await startEtcd();
    await etcd.stop(); // nothing answers at its address now
    const dir = await dataDir();
    const watch = runCdp([
      "watch",
      "--dir",
      dir,
      "--schemas",
      SCHEMAS,
      "--cluster",
      `etcd://${new URL(etcd.endpoints[0]!).host}`,
      "--cluster-prefix",
      "/cdp/x",
    ]);
    await waitUntil(() => watch.output().includes("cannot reach etcd"));
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
  });
});
