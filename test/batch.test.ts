// Judging a batch is a function of its inputs: lines, the table's state and the schemas in, the
// records to write and the changes to announce out. No files, no processes.
import { beforeAll, describe, expect, it } from "vitest";
import { judgeBatch, MAX_HELD_KEYS, type BatchContext } from "../src/batch.js";
import { toInboxLine, type InboxBatch } from "../src/inbox.js";
import { loadSchemas, type Schemas } from "../src/schemas.js";
import { SCHEMAS } from "./helpers.js";

let schemas: Schemas;
beforeAll(async () => {
  schemas = await loadSchemas(SCHEMAS);
});

function batchOf(texts: string[]): InboxBatch {
  let end = 0;
  const lines = texts.map((text, i) => {
    end += Buffer.byteLength(text) + 1;
    return toInboxLine(Buffer.from(text), Buffer.byteLength(text), undefined, i + 1, end, 65536);
  });
  lines.at(-1)!.check = "00ff00ff00ff00ff";
  return { file: "1-2", lines };
}

const context = (overrides: Partial<BatchContext> = {}): BatchContext => ({
  schemas,
  validators: new Map(),
  maxLineBytes: 65536,
  current: (app) => schemas.get(app)!.defaults,
  revision: 10,
  seq: 40,
  time: "2026-11-27T00:00:00.000Z",
  details: true,
  ...overrides,
});

describe("judgeBatch", () => {
  it("stops once the configs it holds reach MAX_HELD_KEYS, and says where the rest of the lines begin", async () => {
    const { compileAppSchema } = await import("../src/schemas.js");
    const flags = compileAppSchema("flags", "flags.schema.json", { type: "object", additionalProperties: { type: "integer" } });
    const wide = Object.fromEntries(Array.from({ length: 500 }, (_, i) => [`k${i}`, i])); // each change holds all of it
    const lines = Array.from({ length: 10 }, (_, i) => `flags:new${i}:${i}`);
    const small = context({ schemas: new Map([["flags", flags]]), current: () => wide, maxHeldKeys: 2000 });
    const judged = judgeBatch(batchOf(lines), small);
    expect(judged.rest).toBe(4); // 4 changes held 501 + 502 + 503 + 504 keys: the fifth line (index 4) starts the next part
    expect(judged.changes).toHaveLength(4);
    expect(judged.journalText.match(/^flags:/gm)).toHaveLength(4);
    expect(judgeBatch(batchOf(lines.slice(0, 3)), small).rest).toBeUndefined();
    expect(MAX_HELD_KEYS).toBe(2_000_000);
  });

  it("judges each line against the state the lines before it leave, numbering revisions and seqs", () => {
    const judged = judgeBatch(batchOf(["ticker:interval:1500", "# by: alice", "# reason: slower", "ticker:interval:1400", "ticker:interval:100", "# trailing note"]), context());
    expect(judged.changes.map(({ change, revision, by, reason }) => ({ value: change.value, previous: change.previous, revision, by, reason }))).toEqual([
      { value: 1500, previous: 1000, revision: 11, by: undefined, reason: undefined },
      { value: 1400, previous: 1500, revision: 12, by: "alice", reason: "slower" },
    ]);
    expect(judged.rejections).toEqual([{ source: "cdp.new:5", reason: "ticker.interval must be > 200, got 100" }]);
    expect(judged.seq).toBe(43);
    expect(judged.lines!.map((line) => line.outcome)).toEqual(["accepted", "ignored", "ignored", "accepted", "rejected", "ignored"]);
    expect(judged.rejectText).toBe("# seq=43 time=2026-11-27T00:00:00.000Z source=cdp.new:5 reason: ticker.interval must be > 200, got 100\nticker:interval:100\n");
    // two change records, then a marker at the batch's very end (with its fingerprint)
    expect(judged.journalText.split("\n").filter((line) => line.startsWith("#"))).toEqual([
      "# rev=11 seq=41 time=2026-11-27T00:00:00.000Z source=cdp.new:1 inbox=1-2@21",
      "# rev=12 seq=42 time=2026-11-27T00:00:00.000Z source=cdp.new:4 inbox=1-2@71 by=alice reason: slower",
      "# seq=43 time=2026-11-27T00:00:00.000Z source=cdp.new:6 inbox=1-2@107/00ff00ff00ff00ff",
    ]);
  });

  it("in a fleet, makes the fleet's records instead of journal text", () => {
    const judged = judgeBatch(batchOf(["ticker:interval:1500", "ticker:name:x"]), context({ fleetHost: "a" }));
    expect(judged.journalText).toBe("");
    expect(judged.fleetRecords.map(({ line, host, seq }) => ({ line, host, seq }))).toEqual([
      { line: "ticker:interval:1500", host: "a", seq: 41 },
      { line: "ticker:name:x", host: "a", seq: 42 },
    ]);
  });

  it("has nothing to commit for blank lines and comments, and keeps no outcomes unless asked", () => {
    expect(judgeBatch(batchOf(["", "# note"]), context())).toMatchObject({ last: undefined, journalText: "", rejectText: "", seq: 40 });
    expect(judgeBatch(batchOf(["ticker:interval:1500"]), context({ details: false })).lines).toBeUndefined();
  });
});
