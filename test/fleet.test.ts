// The fleet's log on a real etcd: ordered commits that fail when another host got there first,
// and followers that see every record once, in order, across restarts.
import { appendFile, writeFile } from "node:fs/promises";
import { userInfo } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Etcd3 } from "etcd3";
import { FleetLog, type FleetRecord, type FleetSnapshot } from "../src/fleet/log.js";
import type { Rollout } from "../src/fleet/rollouts.js";
import { compactEtcd, fleetArgs, makeCertificates, startEtcd, startFleetHost } from "./etcd.js";
import {
  afterThisTest,
  capturedLogger,
  cdp as runCli,
  FLEET_TIMEOUT,
  openEvents,
  getConfig,
  journalOf,
  readText,
  recordLines,
  SCHEMAS,
  startWatch,
  tempDir,
  waitUntil,
  dataDir,
  appendAndWait,
} from "./helpers.js";

function fleet(endpoints: string[], prefix = "/cdp/test"): FleetLog {
  const log = new FleetLog({ endpoints, prefix, log: capturedLogger().logger });
  afterThisTest(() => log.close());
  return log;
}

/** Hosts a and c watching with `args`; c takes `lines` (appended on a), then stops: it is away while the test goes on. */
async function hostAwayAfter(args: string[], lines: string, count: number): Promise<{ a: string; cDir: string }> {
  const a = await tempDir();
  await startWatch(a, [...args, "--cluster-host", "a"]);
  const cDir = await tempDir();
  const first = await startWatch(cDir, [...args, "--cluster-host", "c"]);
  await appendFile(join(a, "cdp.new"), lines);
  await waitUntil(async () => (await journalOf(cDir)).length === count);
  first.child.kill("SIGTERM");
  expect(await first.exited).toBe(0);
  return { a, cDir };
}

const record = (line: string, host = "a") => ({
  line,
  host,
  source: "cdp.new:1",
  time: new Date().toISOString(),
  seq: 1,
  position: { file: "1-1", offset: 10, line: 1 },
});

describe("the fleet log on etcd", () => {
  it("commits records after the head, and refuses a commit made against an old head", async () => {
    const { endpoints } = await startEtcd();
    const a = fleet(endpoints);
    const b = fleet(endpoints);
    expect(await a.head()).toBe(0);
    expect(await a.commit(0, [record("ticker:interval:1500"), record("ticker:interval:1600")])).toBe(true);
    expect(await b.head()).toBe(2);
    expect(await b.commit(0, [record("ticker:interval:1700", "b")])).toBe(false); // a got there first
    // what the refused transaction saw: the head; for a commit sent before, also the record that took revision 1 (no second read)
    expect(await b.commitOrRefusal(0, [record("ticker:interval:1700", "b")])).toEqual({ head: 2 });
    expect(await b.commitOrRefusal(0, [record("ticker:interval:1700", "b")], true)).toMatchObject({
      head: 2,
      mayBeOurs: true,
      first: { revision: 1, line: "ticker:interval:1500", host: "a" },
    });
    expect(await b.commitOrRefusal(1, [record("ticker:interval:1700", "b")], true)).toEqual({ head: 2, mayBeOurs: true }); // revision 2 is inside a's commit: no commit starts there
    expect(await b.commit(2, [record("ticker:interval:1700", "b")])).toBe(true);
    expect((await a.recordsAfter(0)).map((r) => [r.revision, r.line, r.host])).toEqual([
      [1, "ticker:interval:1500", "a"],
      [2, "ticker:interval:1600", "a"],
      [3, "ticker:interval:1700", "b"],
    ]);
    expect(await fleet(endpoints, "/cdp/other").head()).toBe(0); // fleets are apart by prefix
  });

  it("deflates a large commit once every host says it reads that, and reads either back", async () => {
    const { endpoints } = await startEtcd();
    const raw = new Etcd3({ hosts: endpoints });
    afterThisTest(async () => raw.close());
    const status = (host: string) => ({ host, revision: 0, ready: true, diverged: [], versions: {}, time: new Date().toISOString() });
    // a host of an earlier version says nothing of the formats it reads
    await raw.put("/cdp/formats/hosts/old").value(JSON.stringify(status("old")));
    const a = fleet(endpoints, "/cdp/formats");
    await a.announce(status("a"));
    expect(JSON.parse((await raw.get("/cdp/formats/hosts/a").string())!)).toMatchObject({ host: "a", reads: ["deflated"] });
    const burst = (from: number) => Array.from({ length: 200 }, (_, i) => record(`ticker:interval:${1000 + from + i}`));
    expect(await a.commit(0, burst(0))).toBe(true);
    const first = (await raw.get("/cdp/formats/log/000000000001").string())!;
    expect(JSON.parse(first)).toHaveProperty("then"); // "old" would not read it deflated
    expect(JSON.parse(first)).not.toHaveProperty("deflated");

    await raw.delete().key("/cdp/formats/hosts/old"); // every host left reads it
    const b = fleet(endpoints, "/cdp/formats"); // (a asks again after 5 s)
    expect(await b.commit(200, burst(200))).toBe(true);
    const second = (await raw.get("/cdp/formats/log/000000000201").string())!;
    expect(JSON.parse(second)).toHaveProperty("deflated");
    expect(second.length).toBeLessThan(first.length / 3);
    const back = await fleet(endpoints, "/cdp/formats").recordsAfter(0);
    expect(back.map((r) => [r.revision, r.line])).toEqual([...burst(0), ...burst(200)].map((r, i) => [i + 1, r.line]));
  });

  it("keeps one commit under one key, and reads, follows and trims from the middle of a commit", async () => {
    const { endpoints } = await startEtcd();
    const log = fleet(endpoints);
    const lines = (from: number, count: number) => Array.from({ length: count }, (_, i) => record(`ticker:interval:${1000 + from + i}`));
    expect(await log.commit(0, lines(1, 3))).toBe(true);
    expect(await log.commit(3, lines(4, 2))).toBe(true);
    expect(await log.commit(5, lines(6, 1))).toBe(true);
    const etcd = new Etcd3({ hosts: endpoints });
    afterThisTest(async () => etcd.close());
    expect(await etcd.getAll().prefix("/cdp/test/log/").keys()).toEqual([
      "/cdp/test/log/000000000001",
      "/cdp/test/log/000000000004",
      "/cdp/test/log/000000000006",
    ]);
    expect((await log.recordsAfter(1)).map((r) => [r.revision, r.line])).toEqual(
      [2, 3, 4, 5, 6].map((revision) => [revision, `ticker:interval:${1000 + revision}`]),
    );

    const heard: (FleetRecord | FleetSnapshot)[] = [];
    const following = await fleet(endpoints).follow(2, (item) => heard.push(item));
    afterThisTest(() => following.stop());
    expect(await log.commit(6, lines(7, 2))).toBe(true);
    await waitUntil(() => heard.length === 6);
    expect(heard.map((r) => r.revision)).toEqual([3, 4, 5, 6, 7, 8]);

    // revision 5 is kept, and with it the whole commit of revisions 4 and 5
    expect(await log.trim({ revision: 6, lines: ["ticker:interval:1006"], time: new Date().toISOString() }, 5)).toBe(true);
    expect((await log.recordsAfter(0)).map((r) => r.revision)).toEqual([4, 5, 6, 7, 8]);

    // a commit's later records are stored without what they share with its first, and read back whole
    const at = (time: string, line: string, host: string) => ({ ...record(line, host), time });
    expect(
      await log.commit(8, [
        at("2026-01-01T00:00:00.000Z", "ticker:interval:1009", "h1"),
        at("2026-01-01T00:00:00.000Z", "ticker:interval:1010", "h1"),
        at("2026-01-01T00:00:01.000Z", "ticker:interval:1011", "h2"),
      ]),
    ).toBe(true);
    expect((await log.recordsAfter(8)).map((r) => [r.revision, r.host, r.time, r.seq, r.position])).toEqual([
      [9, "h1", "2026-01-01T00:00:00.000Z", 1, record("").position],
      [10, "h1", "2026-01-01T00:00:00.000Z", 1, record("").position],
      [11, "h2", "2026-01-01T00:00:01.000Z", 1, record("").position],
    ]);
  });

  it("forgets at a trim the rollouts that ended before the records it keeps, but for the 20 most recent", async () => {
    const { endpoints } = await startEtcd();
    const log = fleet(endpoints);
    const rollout = (n: number, ended?: number): Rollout => ({
      id: `r-${n}`,
      app: "ticker",
      lines: ["ticker:interval:1500"],
      before: [],
      hosts: ["a"],
      state: ended ? "aborted" : "baking",
      bakeUntil: new Date().toISOString(),
      startedOn: "a",
      source: "cdp.new:1",
      seq: n,
      started: new Date().toISOString(),
      staged: n,
      ...(ended ? { ended } : {}),
    });
    // 30 rollouts, each ended at its own revision, and one still baking
    for (let n = 1; n <= 30; n++) expect(await log.commit(n - 1, [{ ...record(""), rollout: { step: "aborted", rollout: rollout(n, n) } }])).toBe(true);
    expect(await log.commit(30, [{ ...record(""), rollout: { step: "staged", rollout: rollout(31) } }])).toBe(true);
    expect(await log.rollouts()).toHaveLength(31);
    expect(await log.trim({ revision: 31, lines: [], time: new Date().toISOString() }, 29)).toBe(true);
    // ended before revision 29: r-1 … r-28, of which the 20 most recent (r-9 … r-28) stay
    expect((await log.rollouts()).map((r) => r.id).sort()).toEqual([...Array.from({ length: 22 }, (_, i) => `r-${i + 9}`), "r-31"].sort());
  });

  it("saves a state too large for one etcd request in parts: two trims at once leave one whole state, a later trim deletes its parts", async () => {
    const { endpoints } = await startEtcd();
    const [a, b] = [fleet(endpoints, "/cdp/parts"), fleet(endpoints, "/cdp/parts")];
    const raw = new Etcd3({ hosts: endpoints[0]! });
    afterThisTest(async () => raw.close());
    const partKeys = () => raw.getAll().prefix("/cdp/parts/state-parts/").keys();
    expect(await a.commit(0, [record("ticker:interval:1500")])).toBe(true);
    const big: FleetSnapshot = {
      revision: 1,
      lines: Array.from({ length: 1500 }, (_, i) => `flags:k${i}:${"v".repeat(1000)}`),
      time: new Date().toISOString(),
    };
    const saved = await Promise.all([a.trim(big, 1), b.trim(big, 1)]);
    expect(saved.filter(Boolean)).toHaveLength(1); // the same revision: the first saves it, the other finds it saved
    expect(await b.snapshot()).toEqual(big);
    expect(await partKeys()).toHaveLength(2); // 1.5 MB in parts of at most 1 MiB, of one attempt only
    expect((await raw.get("/cdp/parts/state").string())!.length).toBeLessThan(1000);

    expect(await a.commit(1, [record("ticker:interval:1600")])).toBe(true);
    const small: FleetSnapshot = { revision: 2, lines: ["ticker:interval:1600"], time: new Date().toISOString() };
    expect(await b.trim(small, 2)).toBe(true);
    expect(await a.snapshot()).toEqual(small);
    expect(await partKeys()).toEqual([]);
  });

  it("lets exactly one of many concurrent commits at the same head succeed", async () => {
    const { endpoints } = await startEtcd();
    const hosts = Array.from({ length: 5 }, () => fleet(endpoints));
    const results = await Promise.all(hosts.map((host, i) => host.commit(0, [record(`ticker:interval:${1000 + i}`, `h${i}`)])));
    expect(results.filter(Boolean)).toHaveLength(1);
    expect(await hosts[0]!.head()).toBe(1);
  });

  it("follows: the committed records first, then live ones, each once and in order", async () => {
    const { endpoints } = await startEtcd();
    const writer = fleet(endpoints);
    await writer.commit(0, [record("ticker:interval:1001"), record("ticker:interval:1002")]);
    const heard: (FleetRecord | FleetSnapshot)[] = [];
    const following = await fleet(endpoints).follow(1, (item) => heard.push(item));
    afterThisTest(() => following.stop());
    await waitUntil(() => heard.length === 1);
    for (let head = 2; head < 40; head += 2) {
      expect(await writer.commit(head, [record(`ticker:interval:${1000 + head + 1}`), record(`ticker:interval:${1000 + head + 2}`)])).toBe(true);
    }
    await waitUntil(() => heard.length === 39);
    expect(heard.map((r) => r.revision)).toEqual(Array.from({ length: 39 }, (_, i) => i + 2));
    expect(heard.at(-1)).toMatchObject({ line: "ticker:interval:1040" });
  });
});

describe("cdp watch --cluster: three hosts, one configuration", { timeout: FLEET_TIMEOUT }, () => {
  it("lists the hosts with their revision and state (GET /v1/hosts); a host killed drops out once its lease expires", async () => {
    const { endpoints } = await startEtcd();
    const a = await tempDir();
    const watchA = await startWatch(a, [...fleetArgs({ endpoints }, "/cdp/hosts", "a"), "--http", "127.0.0.1:0"]);
    const b = await startFleetHost({ endpoints }, "b", { prefix: "/cdp/hosts" });
    const url = /"url":"(http:[^"]+)"/.exec(watchA.output())![1]!;
    const hosts = async () =>
      (await (await fetch(`${url}/v1/hosts`)).json()) as { host: string; revision: number; ready: boolean; versions: Record<string, number> }[];
    await appendFile(join(a, "cdp.new"), "ticker:interval:1500\n");
    await waitUntil(async () => (await hosts()).filter((h) => h.revision === 1).length === 2);
    expect(await hosts()).toEqual([
      expect.objectContaining({ host: "a", revision: 1, ready: true, diverged: [], versions: { db: 1, ticker: 1 } }),
      expect.objectContaining({ host: "b", revision: 1, ready: true, diverged: [], versions: { db: 1, ticker: 1 } }),
    ]);
    b.watch.child.kill("SIGKILL");
    await b.watch.exited;
    await waitUntil(async () => (await hosts()).length === 1, 15_000);
    expect((await hosts())[0]).toMatchObject({ host: "a" });
    watchA.child.kill("SIGTERM");
    expect(await watchA.exited).toBe(0);
  });

  it("applies a change appended on any host on every host, in the same order", async () => {
    const { endpoints } = await startEtcd();
    const [a, b, c] = [await startFleetHost({ endpoints }, "a"), await startFleetHost({ endpoints }, "b"), await startFleetHost({ endpoints }, "c")];
    for (let i = 0; i < 10; i++) {
      await appendFile(join((i % 2 === 0 ? a : b).dir, "cdp.new"), `ticker:interval:${1001 + i}\nticker:name:n${i}\n`);
    }
    await appendFile(join(c.dir, "cdp.new"), "ticker:interval:100\n"); // rejected where it was read
    for (const { dir } of [a, b, c]) await waitUntil(async () => (await journalOf(dir)).length === 20);
    const journals = await Promise.all([a, b, c].map(({ dir }) => journalOf(dir)));
    expect(journals[1]).toEqual(journals[0]);
    expect(journals[2]).toEqual(journals[0]);
    await waitUntil(async () => (await readText(join(c.dir, "cdp.rej"))).includes("ticker:interval:100"));
    expect(await readText(join(a.dir, "cdp.rej"))).toBe("");
    const configs = await Promise.all([a, b, c].map(({ dir }) => getConfig(dir, "ticker")));
    // lines read on two hosts at once commit in some order, but in the same one everywhere
    expect(journals[0]!.slice().sort()).toEqual(
      Array.from({ length: 10 }, (_, i) => [`ticker:interval:${1001 + i}`, `ticker:name:n${i}`])
        .flat()
        .sort(),
    );
    const intervals = journals[0]!.filter((line) => line.startsWith("ticker:interval:"));
    expect(configs[0]).toMatchObject({ interval: Number(intervals.at(-1)!.split(":")[2]) });
    expect(configs[1]).toEqual(configs[0]);
    expect(configs[2]).toEqual(configs[0]);
    // the record says where a change came from, the same on every host
    expect(await readText(join(c.dir, "cdp"))).toMatch(/ source=a:cdp\.new:1$/m);
  });

  it("never breaks a cross-field rule when two hosts push conflicting changes at once", async () => {
    const { endpoints } = await startEtcd();
    const [a, b] = [await startFleetHost({ endpoints }, "a"), await startFleetHost({ endpoints }, "b")];
    let changes = 0;
    for (let round = 0; round < 5; round++) {
      await appendFile(join(a.dir, "cdp.new"), 'db:pool:{"min":1,"max":10}\n');
      changes++;
      for (const { dir } of [a, b]) await waitUntil(async () => (await journalOf(dir)).length === changes);
      // each is valid against the state it was read in; together min 8 > max 5 would break the rule
      await Promise.all([appendFile(join(a.dir, "cdp.new"), "db:pool.min:8\n"), appendFile(join(b.dir, "cdp.new"), "db:pool.max:5\n")]);
      const rejections = async () => (await recordLines(join(a.dir, "cdp.rej"))).length + (await recordLines(join(b.dir, "cdp.rej"))).length;
      await waitUntil(async () => (await rejections()) === round + 1);
      changes++;
      for (const { dir } of [a, b]) await waitUntil(async () => (await journalOf(dir)).length === changes);
      const pool = (await getConfig(a.dir, "db.pool")) as { min: number; max: number };
      expect(pool.max).toBeGreaterThanOrEqual(pool.min);
      expect(await getConfig(b.dir, "db.pool")).toEqual(pool);
    }
  });

  it("catches up a host that was stopped while 1,000 changes landed", async () => {
    const { endpoints } = await startEtcd();
    const a = await startFleetHost({ endpoints }, "a");
    let c = await startFleetHost({ endpoints }, "c");
    c.watch.child.kill("SIGTERM");
    expect(await c.watch.exited).toBe(0);
    await appendFile(join(a.dir, "cdp.new"), Array.from({ length: 1000 }, (_, i) => `ticker:interval:${1001 + i}\n`).join(""));
    await waitUntil(async () => (await journalOf(a.dir)).length === 1000);
    c = await startFleetHost({ endpoints }, "c", { dir: c.dir });
    await waitUntil(async () => (await journalOf(c.dir)).length === 1000);
    expect(await journalOf(c.dir)).toEqual(await journalOf(a.dir));
    expect(c.watch.output()).toContain("caught up with the fleet");
    await appendFile(join(c.dir, "cdp.new"), "ticker:interval:1500\n");
    await waitUntil(async () => ((await getConfig(a.dir, "ticker.interval")) as number) === 1500);
  });

  it("commits a burst of long lines in parts that etcd accepts, and catches a host up on them", async () => {
    const { endpoints } = await startEtcd();
    const a = await startFleetHost({ endpoints }, "a");
    let c = await startFleetHost({ endpoints }, "c");
    c.watch.child.kill("SIGTERM");
    expect(await c.watch.exited).toBe(0);
    // 80 lines of 60 kB: 4.8 MB, where etcd takes requests of 1.5 MiB and gRPC messages of 4 MiB by default
    const long = (i: number) => `ticker:name:"${String(i).padStart(60_000, "x")}"\n`;
    await appendFile(join(a.dir, "cdp.new"), Array.from({ length: 80 }, (_, i) => long(i)).join(""));
    await waitUntil(async () => (await journalOf(a.dir)).length === 80);
    c = await startFleetHost({ endpoints }, "c", { dir: c.dir });
    await waitUntil(async () => (await journalOf(c.dir)).length === 80);
    expect(await journalOf(c.dir)).toEqual(await journalOf(a.dir));
    expect(await getConfig(c.dir, "ticker.name")).toBe(long(79).slice("ticker:name:".length + 1, -2));
  });

  it("commits lines that swell past one etcd request once escaped in smaller parts, and refuses a line limit a fleet cannot carry", async () => {
    const { endpoints } = await startEtcd();
    const a = await startFleetHost({ endpoints }, "a");
    const c = await startFleetHost({ endpoints }, "c");
    // a control character is six bytes in JSON: 20 lines of 60,000 of them are 7 MB escaped
    const swelling = (i: number) => `ticker:name:${String(i).padStart(60_000, "\u0001")}\n`;
    await appendFile(join(a.dir, "cdp.new"), Array.from({ length: 20 }, (_, i) => swelling(i)).join(""));
    await waitUntil(async () => (await journalOf(c.dir)).length === 20 && (await journalOf(a.dir)).length === 20);
    expect(await journalOf(c.dir)).toEqual(await journalOf(a.dir));
    expect(await getConfig(c.dir, "ticker.name")).toBe(swelling(19).slice("ticker:name:".length, -1));
    expect(await readText(join(a.dir, "cdp.rej"))).toBe("");

    const refused = await runCli([
      "watch",
      "--dir",
      await dataDir(),
      "--cluster",
      `etcd://${new URL(endpoints[0]!).host}`,
      "--cluster-prefix",
      "/cdp/test",
      "--cluster-host",
      "d",
      "--max-line-bytes",
      "1000000",
    ]);
    expect(refused.code).toBe(2);
    expect(refused.output).toContain("in a fleet --max-line-bytes is at most 131072");
  });

  it("catches up a host whose revision etcd has compacted away, and follows on across compactions", async () => {
    const etcd = await startEtcd();
    const { endpoints } = etcd;
    const a = await startFleetHost({ endpoints }, "a");
    let c = await startFleetHost({ endpoints }, "c");
    await appendFile(join(a.dir, "cdp.new"), "ticker:interval:1001\n");
    await waitUntil(async () => (await journalOf(c.dir)).length === 1);
    c.watch.child.kill("SIGTERM");
    expect(await c.watch.exited).toBe(0);
    for (let i = 2; i <= 20; i++) await appendFile(join(a.dir, "cdp.new"), `ticker:interval:${1000 + i}\n`);
    await waitUntil(async () => (await journalOf(a.dir)).length === 20);
    await compactEtcd(etcd); // c's revision is no longer in etcd's history
    c = await startFleetHost({ endpoints }, "c", { dir: c.dir });
    await waitUntil(async () => (await journalOf(c.dir)).length === 20);
    expect(await journalOf(c.dir)).toEqual(await journalOf(a.dir));
    await appendFile(join(a.dir, "cdp.new"), "ticker:name:compacted\n");
    await waitUntil(async () => (await journalOf(c.dir)).length === 21);
    await compactEtcd(etcd); // while both follow
    await appendFile(join(c.dir, "cdp.new"), "ticker:interval:1500\n");
    await waitUntil(async () => (await journalOf(a.dir)).length === 22);
    expect(await getConfig(a.dir, "ticker.interval")).toBe(1500);
  });

  it("keeps the fleet's log in etcd bounded, and a host away past the trimmed records takes the fleet's state", async () => {
    const { endpoints } = await startEtcd();
    const cluster = `etcd://${new URL(endpoints[0]!).host}`;
    const trimming = ["--cluster", cluster, "--cluster-prefix", "/cdp/trim", "--keep-history", "5"];
    const { a, cDir } = await hostAwayAfter(trimming, 'ticker:interval:1001\nticker:meta:{"from":"a"}\n', 2);

    for (let from = 0; from < 250; from += 25) {
      // in ten commits: the log keeps whole commits
      await appendFile(join(a, "cdp.new"), Array.from({ length: 25 }, (_, i) => `ticker:interval:${2001 + from + i}\n`).join(""));
      await waitUntil(async () => (await journalOf(a)).length === 27 + from);
    }
    const log = fleet(endpoints, "/cdp/trim");
    await waitUntil(async () => ((await log.snapshot())?.revision ?? 0) >= 200);
    const kept = await log.recordsAfter(0);
    expect(kept.length).toBeLessThan(100); // 252 committed, the older ones trimmed
    expect(kept.at(-1)!.revision).toBe(252);

    const again = await startWatch(cDir, [...trimming, "--cluster-host", "c"]);
    expect(again.output()).toContain("took the fleet's state");
    expect(await getConfig(cDir, "ticker")).toEqual(await getConfig(a, "ticker"));
    expect(await readText(join(cDir, "cdp"))).toMatch(/^# base rev=2\d\d seq=/m);
    await appendFile(join(cDir, "cdp.new"), "ticker:interval:1500\n");
    await waitUntil(async () => ((await getConfig(a, "ticker.interval")) as number) === 1500);
  });

  it("trims a fleet whose state is larger than one etcd request (saved in parts), and a host away takes it", async () => {
    const { endpoints } = await startEtcd();
    const schemas = await tempDir();
    await writeFile(join(schemas, "flags.schema.json"), JSON.stringify({ type: "object", additionalProperties: { type: "string" } }));
    const trimming = ["--schemas", schemas, ...fleetArgs({ endpoints }, "/cdp/big", "a").slice(0, 4), "--keep-history", "5"];
    const { a, cDir } = await hostAwayAfter(trimming, "flags:first:one\n", 1);

    // 2,400 keys of 2,000 characters: a state of up to 4.8 MB, where etcd takes 1.5 MiB per request
    const value = "v".repeat(2000);
    await appendFile(join(a, "cdp.new"), Array.from({ length: 2400 }, (_, i) => `flags:k${i}:${value}\n`).join(""));
    await waitUntil(async () => (await journalOf(a)).length === 2401, 60_000);
    const log = fleet(endpoints, "/cdp/big");
    await waitUntil(async () => ((await log.snapshot())?.revision ?? 0) >= 1000, 30_000, "a trim saves a state of 2 MB or more");
    const saved = (await log.snapshot())!;
    expect(saved.lines).toHaveLength(saved.revision); // one key per revision
    expect(saved.lines).toContain(`flags:k${saved.revision - 2}:${value}`);
    expect((await log.recordsAfter(0))[0]!.revision).toBeGreaterThan(1); // the records it covers are trimmed
    const raw = new Etcd3({ hosts: endpoints[0]! });
    afterThisTest(async () => raw.close());
    expect((await raw.get("/cdp/big/state").string())!.length).toBeLessThan(1000); // the lines are in parts beside it

    const again = await startWatch(cDir, [...trimming, "--cluster-host", "c"]);
    expect(again.output()).toContain("took the fleet's state");
    expect(await getConfig(cDir, "flags", schemas)).toEqual(await getConfig(a, "flags", schemas));
  });

  it("compacts a host's journal while the fleet's changes keep coming, and restarts from it", async () => {
    const { endpoints } = await startEtcd();
    const cluster = ["--cluster", `etcd://${new URL(endpoints[0]!).host}`, "--cluster-prefix", "/cdp/compact"];
    const a = await tempDir();
    await startWatch(a, [...cluster, "--cluster-host", "a"]);
    const b = await tempDir();
    const watchB = await startWatch(b, [...cluster, "--cluster-host", "b", "--compact-after", "50", "--keep-history", "10"]);
    for (let i = 0; i < 4; i++) {
      await appendFile(join(a, "cdp.new"), Array.from({ length: 40 }, (_, j) => `ticker:interval:${1001 + 40 * i + j}\n`).join(""));
    }
    await waitUntil(() => watchB.output().includes("compacted the journal"));
    await waitUntil(async () => ((await getConfig(b, "ticker.interval")) as number) === 1160);
    expect(await readText(join(b, "cdp"))).toMatch(/^# base rev=\d+ .*source=compaction/m);
    expect((await journalOf(b)).length).toBeLessThan(160);
    watchB.child.kill("SIGTERM");
    expect(await watchB.exited).toBe(0);
    await appendFile(join(a, "cdp.new"), "ticker:interval:1500\n");
    await startWatch(b, [...cluster, "--cluster-host", "b", "--compact-after", "50", "--keep-history", "10"]);
    await waitUntil(async () => ((await getConfig(b, "ticker.interval")) as number) === 1500);
    const history = JSON.parse((await runCli(["history", "--dir", b, "--schemas", SCHEMAS, "--json", "--limit", "1"])).output) as { revision: number }[];
    expect(history[0]!.revision).toBe(161);
  });

  it("authenticates to etcd with --cluster-user and --cluster-password-file, again once its token expired, and says so when etcd refuses", async () => {
    const etcd = await startEtcd(1, undefined, ["--auth-token-ttl=1"]); // a token unused for a second is forgotten
    const gateway = etcd.endpoints[0]!;
    const call = async (path: string, body: object, token?: string) => {
      const response = await fetch(`${gateway}/v3/${path}`, { method: "POST", body: JSON.stringify(body), headers: token ? { authorization: token } : {} });
      if (response.status !== 200) throw new Error(`${path}: ${await response.text()}`);
      return (await response.json()) as { token?: string };
    };
    const auth = (path: string, body: object) => call(`auth/${path}`, body);
    await auth("role/add", { name: "root" });
    await auth("user/add", { name: "root", password: "root-password" });
    await auth("user/grant", { user: "root", role: "root" });
    await auth("enable", {});
    const dir = await dataDir();
    const password = join(await tempDir(), "password");
    await writeFile(password, "root-password\n", { mode: 0o600 });
    const cluster = ["--cluster", `etcd://${new URL(gateway).host}`, "--cluster-prefix", "/cdp/auth"];
    const watch = await startWatch(dir, [...cluster, "--cluster-user", "root", "--cluster-password-file", password]);
    await appendAndWait(dir, "ticker:interval:1500\n", 1);
    // time passing is what this tests: a token taken now is forgotten within 3 s (each use would
    // keep it, so it is tried once), and the host's token, used once per 2 s, lapses meanwhile
    const { token } = await auth("authenticate", { name: "root", password: "root-password" });
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const used = await call("kv/range", { key: Buffer.from("/cdp/auth/head").toString("base64") }, token).then(
      () => "",
      (error: Error) => error.message,
    );
    expect(used).toContain("invalid auth token");
    await appendAndWait(dir, "ticker:interval:1600\n", 2);
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);

    await writeFile(password, "wrong-password\n");
    const refused = await runCli([
      "watch",
      "--dir",
      await dataDir(),
      "--schemas",
      SCHEMAS,
      ...cluster,
      "--cluster-user",
      "root",
      "--cluster-password-file",
      password,
    ]);
    expect(refused.code).toBe(2);
    expect(refused.output).toContain("cdp: etcd refused this host:");
    const alone = await runCli(["watch", "--dir", await dataDir(), "--schemas", SCHEMAS, ...cluster, "--cluster-user", "root"]);
    expect(alone.output).toContain("cdp: --cluster-user and --cluster-password-file go together");
  });

  it("talks to etcd over TLS with a client certificate (--cluster-ca, --cluster-cert, --cluster-key)", async () => {
    const certificates = await makeCertificates();
    const etcd = await startEtcd(1, certificates);
    const cluster = ["--cluster", `https://${new URL(etcd.endpoints[0]!).host}`, "--cluster-prefix", "/cdp/tls", "--cluster-ca", certificates.ca];
    const client = ["--cluster-cert", certificates.client.cert, "--cluster-key", certificates.client.key];
    const [a, b] = [await tempDir(), await tempDir()];
    await startWatch(a, [...cluster, ...client, "--cluster-host", "a"]);
    await startWatch(b, [...cluster, ...client, "--cluster-host", "b"]);
    await appendFile(join(a, "cdp.new"), "ticker:interval:1500\n");
    await waitUntil(async () => (await journalOf(b)).length === 1);
    expect(await getConfig(b, "ticker.interval")).toBe(1500);
  });

  it("gives the same history on every host, and a rollback on one host undoes the change everywhere", async () => {
    const { endpoints } = await startEtcd();
    const [a, b] = [await startFleetHost({ endpoints }, "a"), await startFleetHost({ endpoints }, "b")];
    await appendFile(join(a.dir, "cdp.new"), "ticker:interval:1500\n");
    await waitUntil(async () => (await journalOf(b.dir)).length === 1);
    await appendFile(join(b.dir, "cdp.new"), "ticker:interval:2500\n");
    await waitUntil(async () => (await journalOf(a.dir)).length === 2);
    const history = async (dir: string) => JSON.parse((await runCli(["history", "--dir", dir, "--schemas", SCHEMAS, "--json"])).output) as object[];
    expect(await history(a.dir)).toEqual(await history(b.dir));
    expect(await history(a.dir)).toMatchObject([
      { revision: 2, source: "b:cdp.new:1", value: 2500, previous: 1500 },
      { revision: 1, source: "a:cdp.new:1", value: 1500, previous: 1000 },
    ]);
    const rollback = await runCli(["rollback", "--dir", a.dir, "--schemas", SCHEMAS, "--to", "1"]);
    expect(rollback.code).toBe(0);
    await waitUntil(async () => (await journalOf(b.dir)).length === 3);
    expect(await getConfig(b.dir, "ticker.interval")).toBe(1500);
    // who pushed and why travel with the records: every host's history says them
    const pushed = await runCli(["push", "--dir", a.dir, "--reason", "ticket 7: slower", "ticker:interval:3500"]);
    expect(pushed.code).toBe(0);
    await waitUntil(async () => (await journalOf(b.dir)).length === 4);
    for (const dir of [a.dir, b.dir])
      expect((await history(dir))[0]).toMatchObject({ revision: 4, value: 3500, by: process.env.SUDO_USER || userInfo().username, reason: "ticket 7: slower" });
    expect((await history(b.dir))[1]).toMatchObject({ revision: 3, reason: "rollback to revision 1" });
    expect((await runCli(["history", "--dir", b.dir, "--schemas", SCHEMAS])).output).toContain("ticket 7: slower");
  });

  it("serves the sidecar in fleet mode: a push on one host is answered once committed, and streamed by another", async () => {
    const { endpoints } = await startEtcd();
    const urlOf = (watch: { output: () => string }) => /"url":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(watch.output())![1]!;
    const cluster = ["--cluster", `etcd://${new URL(endpoints[0]!).host}`, "--cluster-prefix", "/cdp/sidecar", "--http", "127.0.0.1:0"];
    const a = await startWatch(await tempDir(), [...cluster, "--cluster-host", "a"]);
    const b = await startWatch(await tempDir(), [...cluster, "--cluster-host", "b"]);
    const stream = openEvents(`${urlOf(b)}/v1/events`);
    await waitUntil(() => stream.comments.length > 0);
    const response = await fetch(`${urlOf(a)}/v1/changes`, { method: "POST", body: "ticker:interval:1500\nticker:interval:100\n" });
    expect(response.status).toBe(422);
    expect(await response.json()).toMatchObject({ status: "processed", lines: [{ outcome: "accepted", revision: 1 }, { outcome: "rejected" }] });
    await waitUntil(() => stream.events.length === 1);
    // line 3: after the sidecar's marker and its `# by:` line
    expect(stream.changes()).toMatchObject([{ revision: 1, app: "ticker", key: "interval", value: 1500, source: "a:cdp.new:3" }]);
  });

  it("refuses to start when the local journal is ahead of the fleet's log", async () => {
    const { endpoints } = await startEtcd();
    const dir = await dataDir();
    await writeFile(join(dir, "cdp"), "ticker:interval:1500\n");
    const cluster = `etcd://${new URL(endpoints[0]!).host}`;
    const { code, output } = await runCli(["watch", "--dir", dir, "--schemas", SCHEMAS, "--cluster", cluster, "--cluster-prefix", "/cdp/test"]);
    expect(code).toBe(2);
    expect(output).toContain("is at revision 1 but the fleet's log is at 0: this data directory belongs to another fleet");
    expect((await runCli(["watch", "--dir", dir, "--schemas", SCHEMAS, "--cluster", cluster])).output).toContain("cdp: --cluster needs --cluster-prefix /PATH");
    expect((await runCli(["watch", "--dir", dir, "--schemas", SCHEMAS, "--cluster", "127.0.0.1:2379", "--cluster-prefix", "/x"])).output).toContain(
      'cdp: --cluster takes etcd://host:port[,host:port...], got "127.0.0.1:2379"',
    );
  });
});
