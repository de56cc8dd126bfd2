// A fleet commit's records as stored in etcd: later records leave out what follows from the one
// before; reading them back must give every field exactly, whatever the records.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { packCommit, unpackCommit, type FleetRecord } from "../../src/fleet/log.js";

const position = fc.record(
  {
    file: fc.constantFrom("2402252-1796528945720990075", "2402253-1796528945720990075"),
    offset: fc.nat(),
    line: fc.nat(4),
    check: fc.string({ minLength: 16, maxLength: 16 }),
  },
  { requiredKeys: ["file", "offset", "line"] },
);
const record = fc.record(
  {
    line: fc.oneof(fc.constant(""), fc.string({ maxLength: 20 })),
    host: fc.constantFrom("a", "b"),
    source: fc.oneof(fc.constantFrom("cdp.new:0", "cdp.new:1", "cdp.new:2", "cdp.new:3", "other:2", "x:y:3", "rollout-clock"), fc.string({ maxLength: 12 })),
    time: fc.constantFrom("2026-12-06T03:49:08.433Z", "2026-12-06T03:49:09.000Z"),
    seq: fc.nat(4),
    position,
    by: fc.string({ maxLength: 8 }),
    reason: fc.string({ maxLength: 8 }),
  },
  { requiredKeys: ["line", "host", "source", "time", "seq"] },
);

/** Records as a burst makes them: one file, consecutive lines and seqs, sources naming the lines. */
function burst(count: number, from = 31): FleetRecord[] {
  return Array.from({ length: count }, (_, i) => ({
    revision: from + i,
    line: `bench:n:${i}`,
    host: "a",
    source: `cdp.new:${from + i}`,
    time: "2026-12-06T03:49:08.433Z",
    seq: from + i,
    position: { file: "2402252-1796528945720990075", offset: 10 * (from + i), line: from + i },
  }));
}

describe("a fleet commit as stored", () => {
  it("reads back every record exactly, whatever the records", () => {
    fc.assert(
      fc.property(fc.array(record, { minLength: 1, maxLength: 12 }), fc.nat(1000), (drawn, after) => {
        const records = drawn.map((r, i) => ({ revision: after + i + 1, ...r }) as FleetRecord);
        const copy = structuredClone(records);
        expect(unpackCommit(packCommit(records))).toEqual(copy);
        expect(records).toEqual(copy); // packing leaves the caller's records as they were
      }),
      { numRuns: 2000 },
    );
  });

  it("reads back a burst, in a third of the bytes of its records' JSON", () => {
    const records = burst(1000);
    const packed = packCommit(records);
    expect(unpackCommit(packed)).toEqual(burst(1000));
    expect(packed.length).toBeLessThan(JSON.stringify(records).length / 3);
  });
});
