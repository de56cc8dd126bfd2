// A fleet host's member against an in-memory log: records applied in fleet order, each checked
// against this host's schemas and journaled; a lost race; an answer lost in transit. (test/fleet*.ts
// run the same against real etcd and cdp processes.)
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeEach, describe, expect, it } from "vitest";
import type { FleetRecord, FleetSnapshot, Refusal } from "../../src/fleet/log.js";
import { FleetMember, type MemberLog } from "../../src/fleet/member.js";
import { FleetRollouts } from "../../src/fleet/rollouts.js";
import { loadSchemas, type Schemas } from "../../src/schemas/schemas.js";
import { validateChange, type ValidChange } from "../../src/schemas/validate.js";
import { parseLine } from "../../src/lines/parse.js";
import { ConfigTable } from "../../src/store/table.js";
import { capturedLogger, SCHEMAS } from "../helpers.js";

type Committing = Omit<FleetRecord, "revision">;

/** One ordered log, as etcd keeps it for the fleet: a commit holds only at the head it names. */
class MemoryLog implements MemberLog {
  readonly records: FleetRecord[] = [];
  #followers = new Set<(record: FleetRecord) => void>();
  /** The next commit lands but its answer is lost (etcd's leader died after the write). */
  loseNextAnswer = false;
  /** Transactions sent. */
  sent = 0;
  /** Records committed but not yet handed to the followers (a watch that lags): deliver() hands them over. */
  holding: FleetRecord[] | undefined;

  async head(): Promise<number> {
    return this.records.length;
  }

  async commitOrRefusal(after: number, records: Committing[], sentBefore = false): Promise<true | Refusal> {
    this.sent++;
    // as etcd's transaction: the record that took the revision only for a commit sent before
    if (after !== this.records.length)
      return sentBefore ? { head: this.records.length, mayBeOurs: true, first: this.records[after]! } : { head: this.records.length };
    const numbered = records.map((record, i) => ({ ...record, revision: after + i + 1 }));
    this.records.push(...numbered);
    if (this.holding) this.holding.push(...numbered);
    else queueMicrotask(() => this.#hand(numbered));
    if (!this.loseNextAnswer) return true;
    this.loseNextAnswer = false;
    throw new Error("the answer was lost");
  }

  deliver(): void {
    this.#hand(this.holding ?? []);
    this.holding = undefined;
  }

  #hand(records: FleetRecord[]): void {
    for (const record of records) for (const take of this.#followers) take(record);
  }

  async recordsAfter(after: number): Promise<FleetRecord[]> {
    return this.records.slice(after);
  }

  async follow(after: number, take: (record: FleetRecord) => void): Promise<{ stop(): Promise<void> }> {
    for (const record of this.records.slice(after)) take(record);
    this.#followers.add(take);
    return { stop: async () => void this.#followers.delete(take) };
  }

  async rollouts(): Promise<never[]> {
    return [];
  }

  /** The states saved by trims. */
  trims: FleetSnapshot[] = [];

  /** While set, a trim waits for it (etcd slow to answer). */
  trimHeld: Promise<void> | undefined;

  async trim(snapshot: FleetSnapshot): Promise<boolean> {
    await this.trimHeld;
    this.trims.push(snapshot);
    return true;
  }
}

let schemas: Schemas;
let log: MemoryLog;
let table: ConfigTable;
let journaled: string;
let pendingSyncs: (() => void)[];
let member: FleetMember;
const TIME = "2026-12-06T00:00:00.000Z";

/** A member of a new log, host "a", with the schemas in `dir`; `keep`: records kept in the log at a trim. */
async function startMember(dir = SCHEMAS, keep = 1000, trimGapMs = 0): Promise<void> {
  schemas = await loadSchemas(dir);
  log = new MemoryLog();
  const { logger } = capturedLogger();
  table = new ConfigTable(new Map([...schemas].map(([app, schema]) => [app, schema.defaults])), 0, logger);
  journaled = "";
  pendingSyncs = [];
  member = new FleetMember({
    fleet: log,
    host: "a",
    keep,
    sealing: undefined,
    scheduled: () => undefined,
    table,
    schemas: () => schemas,
    schemaFiles: schemas,
    take: () => undefined,
    validators: new Map(),
    journalPath: "/nowhere/cdp",
    // the journal's text is in the page cache at once; its sync waits until the test lets it go
    journal: async (text) => {
      journaled += text;
      return () => new Promise<void>((resolve) => pendingSyncs.push(resolve));
    },
    seq: () => 0,
    stopping: () => false,
    held: () => undefined,
    fault: (error) => {
      throw error;
    },
    applied: () => undefined,
    rollouts: new FleetRollouts(),
    trimGapMs, // 0: each trim at once (the tests commit faster than a second apart)
    rolloutStep: () => undefined,
    vetoRollout: () => false,
    log: logger,
  });
  await member.join();
}

beforeEach(() => startMember());

const syncAll = async () => {
  while (pendingSyncs.length > 0) {
    pendingSyncs.shift()!();
    await new Promise((resolve) => setImmediate(resolve));
  }
};

function fromHost(host: string, lines: string[], after = log.records.length): Committing[] {
  return lines.map((line, i) => ({ line, host, source: `cdp.new:${after + i + 1}`, time: TIME, seq: after + i + 1 }));
}

function judged(line: string): ValidChange {
  const parsed = parseLine(line);
  if (parsed.kind !== "change") throw new Error(line);
  const verdict = validateChange({ schemas, validators: new Map(), current: table }, parsed);
  if (!verdict.ok) throw new Error(verdict.reason);
  return verdict.change;
}

/** A member (keep 100, trims `trimGapMs` apart) with one app, "flags", a map of integers: its schema directory. */
async function startFlagsMember(trimGapMs: number): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "cdp-member-"));
  await writeFile(join(dir, "flags.schema.json"), JSON.stringify({ type: "object", additionalProperties: { type: "integer" } }));
  await startMember(dir, 100, trimGapMs);
  return dir;
}

/** Host b commits `count` changes to flags k0, k1, …, applied and synced here: the revision before them. */
async function commitFlags(count: number): Promise<number> {
  const from = log.records.length;
  await log.commitOrRefusal(
    from,
    fromHost(
      "b",
      Array.from({ length: count }, (_, i) => `flags:k${i}:${from + i}`),
    ),
  );
  await member.untilRevision(from + count);
  await syncAll();
  return from;
}

/** Until the log has saved `count` states (a trim that waits for its gap runs on a timer). */
function untilTrims(count: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const check = () => (log.trims.length === count ? resolve() : setTimeout(check, 10));
    check();
  });
}

describe("a fleet host's member", () => {
  it("saves the state every --keep-history revisions, and no more often than the last state had lines", async () => {
    const dir = await mkdtemp(join(tmpdir(), "cdp-member-"));
    await writeFile(join(dir, "flags.schema.json"), JSON.stringify({ type: "object", additionalProperties: { type: "integer" } }));
    await startMember(dir, 100);
    const commit = async (count: number) => {
      const from = log.records.length;
      await log.commitOrRefusal(
        from,
        fromHost(
          "b",
          Array.from({ length: count }, (_, i) => `flags:k${from + i}:${i}`),
        ),
      );
      await member.untilRevision(from + count);
      await syncAll();
      await member.trimIfDue(from);
    };
    await commit(150); // past revision 100: saved, 150 lines
    expect(log.trims.map((state) => [state.revision, state.lines.length])).toEqual([[150, 150]]);
    await commit(100); // past 200, but not 150 revisions since: saving 150 lines again would cost more than the changes did
    expect(log.trims).toHaveLength(1);
    await commit(100); // past 300 = 2 × 150
    expect(log.trims.map((state) => state.revision)).toEqual([150, 350]);
    await rm(dir, { recursive: true });
  });

  it("trims one at a time and at most once per gap: one due meanwhile runs after it, with the state of then", async () => {
    const dir = await startFlagsMember(300);
    await member.trimIfDue(await commitFlags(100)); // past revision 100: saved at once
    expect(log.trims.map((state) => state.revision)).toEqual([100]);
    const started = Date.now();
    await member.trimIfDue(await commitFlags(100)); // past 200 within the gap: not yet
    await member.trimIfDue(await commitFlags(100)); // past 300: the same deferred trim
    expect(log.trims).toHaveLength(1);
    await untilTrims(2);
    expect(Date.now() - started).toBeGreaterThanOrEqual(250); // the gap after the first, less what the commits took
    expect(log.trims.map((state) => state.revision)).toEqual([100, 300]); // one trim, of the state when it ran
    await member.stop();
    await rm(dir, { recursive: true });
  });

  it("trims once the trim running is done when another falls due meanwhile", async () => {
    const dir = await startFlagsMember(0);
    let release = () => {};
    log.trimHeld = new Promise<void>((resolve) => (release = resolve));
    // the first runs (held by etcd), the next two fall due meanwhile
    for (let i = 0; i < 3; i++) void member.trimIfDue(await commitFlags(100));
    log.trimHeld = undefined;
    release();
    await untilTrims(2);
    expect(log.trims.map((state) => state.revision)).toEqual([100, 300]);
    await member.trimIfDue(await commitFlags(1)); // and the next trims come as before
    expect(log.trims.map((state) => state.revision)).toEqual([100, 300]);
    await member.trimIfDue(await commitFlags(99));
    expect(log.trims.map((state) => state.revision)).toEqual([100, 300, 400]);
    await member.stop();
    await rm(dir, { recursive: true });
  });

  it("applies another host's records in order, each journaled with its host in the source", async () => {
    await log.commitOrRefusal(0, fromHost("b", ["ticker:interval:1500", "ticker:name:fleet"]));
    const applied = member.untilRevision(2);
    await applied;
    expect(table.revision).toBe(2);
    expect(table.config("ticker")).toMatchObject({ interval: 1500, name: "fleet" });
    expect(journaled).toMatch(
      /^# rev=1 seq=0 time=\S+ source=b:cdp.new:1\nticker:interval:1500\n# rev=2 seq=0 time=\S+ source=b:cdp.new:2\nticker:name:fleet\n$/,
    );
    await syncAll();
  });

  it("wakes whoever waits for a revision once it is applied, before the journal's sync", async () => {
    await log.commitOrRefusal(0, fromHost("b", ["ticker:interval:1500"]));
    await member.untilRevision(1);
    expect(pendingSyncs).toHaveLength(1); // applied, not synced yet
    await syncAll();
  });

  it("keeps its last good value where its schemas refuse the fleet's change, and says so until a change it takes", async () => {
    await log.commitOrRefusal(0, fromHost("b", ["ticker:interval:100"]));
    await member.untilRevision(1);
    expect(table.revision).toBe(1);
    expect(table.config("ticker").interval).toBe(1000);
    expect(member.diverged.get("ticker.interval")).toMatch(/must be > 200/);
    expect(journaled).toMatch(/^# rev=1 seq=0 time=\S+ source=diverged:b:cdp.new:1 reason: ticker.interval must be > 200, got 100\n$/);
    await syncAll();
    await log.commitOrRefusal(1, fromHost("b", ["ticker:interval:1500"]));
    await member.untilRevision(2);
    expect(member.diverged.size).toBe(0);
    await syncAll();
  });

  it("commits its own records at the head, applies them as it judged them, and resumes its inbox after the last", async () => {
    const records = fromHost("a", ["ticker:interval:1500"]).map((record) => ({ ...record, position: { file: "1-2", offset: 21, line: 1 } }));
    expect(await member.commit(0, records, [judged("ticker:interval:1500")])).toBe(true);
    await member.untilRevision(1);
    expect(table.config("ticker").interval).toBe(1500);
    expect(member.own).toEqual({ seq: 1, position: { file: "1-2", offset: 21, line: 1 } });
    expect(journaled).toContain("source=a:cdp.new:1 inbox=1-2@21\nticker:interval:1500\n");
    await syncAll();
  });

  it("loses a race to a commit at the same head: nothing of its own lands, and it knows the head it must catch up to", async () => {
    log.holding = []; // b's records are not heard here before a's commit is sent
    await log.commitOrRefusal(0, fromHost("b", ["ticker:interval:1500", "ticker:interval:1600"]));
    const sent = log.sent;
    expect(await member.commit(0, fromHost("a", ["ticker:name:mine"], 0), [judged("ticker:name:mine")])).toBe(false);
    expect(log.sent).toBe(sent + 1); // refused by the log
    expect(await member.headAfterRefusal()).toBe(2);
    expect(log.records.map((record) => record.host)).toEqual(["b", "b"]);
    log.deliver();
    await member.untilRevision(2);
    await syncAll();
  });

  it("takes a commit whose answer was lost but which landed as committed, never sending it twice", async () => {
    log.loseNextAnswer = true;
    const records = fromHost("a", ["ticker:interval:1500"]);
    expect(await member.commit(0, records, [judged("ticker:interval:1500")])).toBe(true);
    expect(log.records).toHaveLength(1);
    await member.untilRevision(1);
    expect(table.config("ticker").interval).toBe(1500);
    await syncAll();
  });
});
