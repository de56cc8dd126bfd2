// Schema versions and their steps as plain functions: reading them from a schema, the way between
// two versions, and a config taken along it (test/migrations.test.ts runs them in a watcher and a fleet).
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type Move, migrateConfig, movesBetween, readVersioning, type Step } from "../../src/schemas/migrations.js";

/** Version 2 renames user_id to userId; version 3 adds a default region. */
const STEPS = new Map<number, Step>([
  [2, { up: [{ op: "move", from: "/user_id", path: "/userId" }], down: [{ op: "move", from: "/userId", path: "/user_id" }] }],
  [3, { up: [{ op: "add", path: "/region", value: "eu" }], down: [{ op: "remove", path: "/region" }] }],
]);

/** The moves between two versions that exist. */
function way(from: number, to: number): Move[] {
  const moves = movesBetween("snow", from, to, STEPS);
  if (typeof moves === "string") throw new Error(moves);
  return moves;
}

describe("a schema's versioning", () => {
  it("reads the version and its steps, or says what is wrong with them", () => {
    expect(readVersioning({ type: "object" })).toEqual({ version: 1, steps: new Map() });
    expect(readVersioning({ "x-cdp-version": 3, "x-cdp-migrations": Object.fromEntries(STEPS) })).toEqual({ version: 3, steps: STEPS });
    expect(readVersioning({ "x-cdp-version": 0 })).toBe('"x-cdp-version" must be an integer of at least 1, got 0');
    expect(readVersioning({ "x-cdp-version": 2, "x-cdp-migrations": { "3": STEPS.get(3) } })).toBe('"x-cdp-migrations"["3"]: leads past "x-cdp-version" 2');
    expect(readVersioning({ "x-cdp-version": 2, "x-cdp-migrations": { "1": STEPS.get(2) } })).toMatch(/a step is named by the version it leads to, 2 or more/);
    expect(readVersioning({ "x-cdp-version": 2, "x-cdp-migrations": { "2": { up: [{ op: "jump", path: "/a" }], down: [] } } })).toMatch(
      /^"x-cdp-migrations"\["2"\]\.up\[0\]: /,
    );
  });
});

describe("the way between two versions", () => {
  it("goes up through each version, and back down the same way", () => {
    expect(movesBetween("snow", 1, 3, STEPS)).toEqual([
      { from: 1, to: 2, operations: STEPS.get(2)!.up },
      { from: 2, to: 3, operations: STEPS.get(3)!.up },
    ]);
    expect(movesBetween("snow", 3, 1, STEPS)).toEqual([
      { from: 3, to: 2, operations: STEPS.get(3)!.down },
      { from: 2, to: 1, operations: STEPS.get(2)!.down },
    ]);
    expect(movesBetween("snow", 2, 2, STEPS)).toEqual([]);
  });

  it("names the step that is missing", () => {
    expect(movesBetween("snow", 1, 4, STEPS)).toBe('snow cannot go from version 3 to 4: "x-cdp-migrations" has no step "4"');
    expect(movesBetween("snow", 4, 1, STEPS)).toBe('snow cannot go back from version 4 to 3: no down step "4" is recorded or in the schema');
  });
});

describe("a config taken along the way", () => {
  it("comes back as it was after going up and down again, whatever its other keys", () => {
    const up = way(1, 3);
    const down = way(3, 1);
    fc.assert(
      fc.property(
        fc.dictionary(
          fc.stringMatching(/^[a-z]{1,6}$/).filter((key) => key !== "region" && key !== "userid"),
          fc.jsonValue(),
        ),
        fc.string(),
        (others, userId) => {
          const config = { ...others, user_id: userId };
          const moved = migrateConfig("snow", config, up);
          expect(moved).toEqual({ ok: true, config: { ...others, userId, region: "eu" } });
          expect(migrateConfig("snow", (moved as { config: Record<string, unknown> }).config, down)).toEqual({ ok: true, config });
          expect(config).toEqual({ ...others, user_id: userId }); // taken along as a copy
        },
      ),
      { numRuns: 300 },
    );
  });

  it("says which operation failed, and why, in an operator's words", () => {
    const up = way(1, 2);
    expect(migrateConfig("snow", { name: "x" }, up)).toEqual({
      ok: false,
      reason: "snow 1 → 2: operation 1 (move /user_id → /userId) failed: nothing is at /user_id",
    });
  });
});
