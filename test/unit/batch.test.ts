// Judging a batch is a function of its inputs: lines, the table's state and the schemas in, the
// records to write and the changes to announce out. No files, no processes.
import { beforeAll, describe, expect, it } from "vitest";
import { judgeBatch, type BatchContext } from "../../src/pipeline/batch.js";
import { toInboxLine, type InboxBatch } from "../../src/inbox/inbox.js";
import { compileAppSchema, loadSchemas, type Schemas } from "../../src/schemas/schemas.js";
import { configsOf, type AppConfig } from "../../src/lines/values.js";
import { SCHEMAS } from "../helpers.js";

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
  configs: configsOf(new Map([...schemas].map(([app, schema]) => [app, schema.defaults]))),
  revision: 10,
  seq: 40,
  time: "2026-11-27T00:00:00.000Z",
  details: true,
  ...overrides,
});

describe("judgeBatch", () => {
  it("judges a change to an app whose schema takes each key alone without reading the rest of its config", () => {
    const flags = compileAppSchema("flags", "flags.schema.json", {
      type: "object",
      properties: { k0: { type: "integer" } },
      required: ["k0"],
      additionalProperties: { type: "integer", minimum: 0 },
    });
    const wide: AppConfig = Object.freeze(Object.fromEntries(Array.from({ length: 20_000 }, (_, i) => [`k${i}`, i])));
    const read: string[] = [];
    // a whole config read would cost in proportion to the app's size: this one refuses to be read
    const configs = {
      config: (app: string): AppConfig => {
        throw new Error(`the whole config of ${app} was read`);
      },
      valueOf: (_app: string, key: string) => {
        read.push(key);
        return wide[key];
      },
    };
    const lines = ["flags:k5:50", "flags:new1:1", "flags:new1:-1", "flags:new1:2", 'flags:k5:"x"'];
    const judged = judgeBatch(batchOf(lines), context({ schemas: new Map([["flags", flags]]), configs }));
    expect(judged.changes.map(({ change }) => [change.key, change.value, change.previous])).toEqual([
      ["k5", 50, 5],
      ["new1", 1, undefined],
      ["new1", 2, 1],
    ]);
    expect(judged.rejections.map(({ reason }) => reason)).toEqual(["flags.new1 must be >= 0, got -1", 'flags.k5 must be an integer, got "x"']);
    expect(read).toEqual(["k5", "new1"]); // later lines read what the batch itself set
  });

  it("judges each line against the state the lines before it leave, numbering revisions and seqs", () => {
    const judged = judgeBatch(
      batchOf(["ticker:interval:1500", "# by: alice", "# reason: slower", "ticker:interval:1400", "ticker:interval:100", "# trailing note"]),
      context(),
    );
    expect(judged.changes.map(({ change, revision, by, reason }) => ({ value: change.value, previous: change.previous, revision, by, reason }))).toEqual([
      { value: 1500, previous: 1000, revision: 11, by: undefined, reason: undefined },
      { value: 1400, previous: 1500, revision: 12, by: "alice", reason: "slower" },
    ]);
    expect(judged.rejections).toEqual([{ source: "cdp.new:5", reason: "ticker.interval must be > 200, got 100" }]);
    expect(judged.seq).toBe(43);
    expect(judged.lines!.map((line) => line.outcome)).toEqual(["accepted", "ignored", "ignored", "accepted", "rejected", "ignored"]);
    expect(judged.rejectText).toBe(
      "# seq=43 time=2026-11-27T00:00:00.000Z source=cdp.new:5 reason: ticker.interval must be > 200, got 100\nticker:interval:100\n",
    );
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
