// The fleet's log on a real etcd: ordered commits that fail when another host got there first,
// and followers that see every record once, in order, across restarts.
import { describe, expect, it } from "vitest";
import { FleetLog, type FleetRecord } from "../src/fleet.js";
import { startEtcd } from "./etcd.js";
import { afterThisTest, capturedLogger, waitUntil } from "./helpers.js";

function fleet(endpoints: string[], prefix = "/cdp/test"): FleetLog {
  const log = new FleetLog({ endpoints, prefix, log: capturedLogger().logger });
  afterThisTest(() => log.close());
  return log;
}

const record = (line: string, host = "a") => ({ line, host, source: "cdp.new:1", time: new Date().toISOString() });

describe("the fleet log on etcd", () => {
  it("commits records after the head, and refuses a commit made against an old head", async () => {
    const { endpoints } = await startEtcd();
    const a = fleet(endpoints);
    const b = fleet(endpoints);
    expect(await a.head()).toBe(0);
    expect(await a.commit(0, [record("ticker:interval:1500"), record("ticker:interval:1600")])).toBe(true);
    expect(await b.head()).toBe(2);
    expect(await b.commit(0, [record("ticker:interval:1700", "b")])).toBe(false); // a got there first
    expect(await b.commit(2, [record("ticker:interval:1700", "b")])).toBe(true);
    expect((await a.recordsAfter(0)).map((r) => [r.revision, r.line, r.host])).toEqual([
      [1, "ticker:interval:1500", "a"],
      [2, "ticker:interval:1600", "a"],
      [3, "ticker:interval:1700", "b"],
    ]);
    expect(await fleet(endpoints, "/cdp/other").head()).toBe(0); // fleets are apart by prefix
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
    const heard: FleetRecord[] = [];
    const following = await fleet(endpoints).follow(1, (r) => heard.push(r));
    afterThisTest(() => following.stop());
    await waitUntil(() => heard.length === 1);
    for (let head = 2; head < 40; head += 2) {
      expect(await writer.commit(head, [record(`ticker:interval:${1000 + head + 1}`), record(`ticker:interval:${1000 + head + 2}`)])).toBe(true);
    }
    await waitUntil(() => heard.length === 39);
    expect(heard.map((r) => r.revision)).toEqual(Array.from({ length: 39 }, (_, i) => i + 2));
    expect(heard.at(-1)!.line).toBe("ticker:interval:1040");
  });
});
