// The journal's records are read back by replay, compaction, history and receipts: what a record
// says must come back field for field. And a batch goes to a fleet's log in bounded parts.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { toInboxLine } from "../../src/inbox/inbox.js";
import { partsOf } from "../../src/pipeline/batch.js";
import { baseRecord, type Commit, changeRecord, markerRecord, positionRecord, readMeta } from "../../src/store/records.js";

const word = fc.stringMatching(/^[A-Za-z0-9._-]{1,12}$/);
const commit = fc.record(
  {
    seq: fc.nat(),
    time: fc.date({ min: new Date(0), max: new Date(4e12), noInvalidDate: true }).map((date) => date.toISOString()),
    line: fc.nat(),
    host: fc.option(word, { nil: undefined }),
    position: fc.option(
      fc.record({ file: fc.stringMatching(/^\d{1,9}-\d{1,19}$/), offset: fc.nat(), check: fc.option(fc.stringMatching(/^[0-9a-f]{16}$/), { nil: undefined }) }),
      { nil: undefined },
    ),
    by: fc.option(word, { nil: undefined }),
    reason: fc.option(
      fc.string({ minLength: 1, maxLength: 40 }).filter((text) => !/[\r\n]/.test(text) && text.trim() === text),
      { nil: undefined },
    ),
  },
  { requiredKeys: ["seq", "time", "line"] },
);

/** A Commit as the pipeline builds one: the source names the inbox line the position is after. */
function commitOf(drawn: typeof commit extends fc.Arbitrary<infer T> ? T : never): Commit {
  const source = `${drawn.host ? `${drawn.host}:` : ""}cdp.new:${drawn.line}`;
  const made: Commit = { seq: drawn.seq, time: drawn.time, source };
  if (drawn.position) {
    made.position = { file: drawn.position.file, offset: drawn.position.offset, line: drawn.line };
    if (drawn.position.check !== undefined) made.position.check = drawn.position.check;
  }
  if (drawn.by !== undefined) made.by = drawn.by;
  if (drawn.reason !== undefined) made.reason = drawn.reason;
  return made;
}

describe("a journal record's metadata", () => {
  it("reads back every field it was written with", () => {
    fc.assert(
      fc.property(commit, fc.nat(), (drawn, revision) => {
        const written = commitOf(drawn);
        const [comment, line] = changeRecord(written, revision, "ticker:interval:1500").split("\n");
        expect(line).toBe("ticker:interval:1500");
        expect(readMeta(comment!)).toEqual({ rev: revision, ...written });
      }),
      { numRuns: 2000 },
    );
  });

  it("reads back a marker and a position record, and nothing from an operator's comment", () => {
    const written: Commit = { seq: 4, time: "2026-12-06T00:00:00.000Z", source: "cdp.new:9", position: { file: "1-2", offset: 90, line: 9 } };
    expect(readMeta(markerRecord({ ...written, marker: "rollout:r-1:staged:ticker", reason: "not here" }, 12).trimEnd())).toEqual({
      rev: 12,
      ...written,
      marker: "rollout:r-1:staged:ticker",
      reason: "not here",
    });
    expect(readMeta(positionRecord({ ...written, by: "ann", reason: "ignored" }).trimEnd())).toEqual(written);
    expect(readMeta("# seq is up, time to go")).toEqual({});
    expect(readMeta(baseRecord(12, 4, written.time, "compaction").trimEnd())).toEqual({
      base: true,
      rev: 12,
      seq: 4,
      time: written.time,
      source: "compaction",
    });
  });
});

describe("a batch's parts for a fleet's log", () => {
  const linesOf = (sizes: number[]) => {
    let end = 0;
    return sizes.map((size, i) => {
      const text = "x".repeat(size);
      end += size + 1;
      return toInboxLine(Buffer.from(text), size, undefined, i + 1, end, 1 << 20);
    });
  };

  it("keeps every line once, in order, each part within the lines and bytes it may hold (a longer line alone)", () => {
    fc.assert(
      fc.property(fc.array(fc.nat(300), { maxLength: 60 }), fc.integer({ min: 1, max: 10 }), fc.integer({ min: 1, max: 1000 }), (sizes, maxLines, maxBytes) => {
        const lines = linesOf(sizes);
        const parts = partsOf(lines, { maxLines, maxBytes });
        expect(parts.flat()).toEqual(lines);
        for (const part of parts) {
          expect(part.length).toBeGreaterThan(0);
          expect(part.length).toBeLessThanOrEqual(maxLines);
          const bytes = part.reduce((sum, line) => sum + Buffer.byteLength(line.text), 0); // the line text its records carry
          if (part.length > 1) expect(bytes).toBeLessThanOrEqual(maxBytes);
        }
      }),
      { numRuns: 500 },
    );
  });

  it("leaves a batch whole when nothing bounds it", () => {
    const lines = linesOf([5, 6, 7]);
    expect(partsOf(lines, { maxLines: 10, maxBytes: Infinity })).toEqual([lines]);
  });
});
