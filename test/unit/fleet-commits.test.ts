// A fleet commit's records as stored in etcd: later records leave out what follows from the one
// before, and a large commit is deflated; reading them back must give every field exactly, whatever the records.
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
        expect(unpackCommit(packCommit(records, true))).toEqual(copy);
        expect(records).toEqual(copy); // packing leaves the caller's records as they were
      }),
      { numRuns: 2000 },
    );
  });

  it("reads back every record of a commit large enough to be deflated exactly, whatever the records", () => {
    let deflated = 0;
    fc.assert(
      fc.property(fc.array(record, { minLength: 80, maxLength: 150 }), fc.nat(1000), (drawn, after) => {
        const records = drawn.map((r, i) => ({ revision: after + i + 1, ...r }) as FleetRecord);
        const packed = packCommit(records, true);
        if (packed.includes('"deflated":')) deflated++;
        expect(unpackCommit(packed)).toEqual(structuredClone(records));
      }),
      { numRuns: 200 },
    );
    expect(deflated).toBeGreaterThan(100); // the drawn commits were large enough
  });

  it("reads back a burst, in a third of the bytes of its records' JSON", () => {
    const records = burst(1000);
    const packed = packCommit(records);
    expect(unpackCommit(packed)).toEqual(burst(1000));
    expect(packed.length).toBeLessThan(JSON.stringify(records).length / 3);
  });

  it("deflates a large commit where every host reads it, and reads either back; a small one stays plain", () => {
    const deflated = packCommit(burst(1000), true);
    expect(JSON.parse(deflated)).toHaveProperty("deflated");
    expect(JSON.parse(deflated)).not.toHaveProperty("then");
    expect(deflated.length).toBeLessThan(packCommit(burst(1000)).length / 4);
    expect(unpackCommit(deflated)).toEqual(burst(1000));
    // a host of an earlier version reads the first record whole (and then waits, naming the revisions it misses)
    expect(JSON.parse(deflated)).toMatchObject({ revision: 31, line: "bench:n:0", source: "cdp.new:31" });
    const small = packCommit(burst(3), true);
    expect(JSON.parse(small)).toHaveProperty("then");
    expect(unpackCommit(small)).toEqual(burst(3));
  });
});
