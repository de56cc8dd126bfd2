// Changes in time, judged as plain functions: when, for how long, what a directive asks, and what
// firing a schedule writes (its changes, what it leaves alone, and that it is done).
import { beforeAll, describe, expect, it } from "vitest";
import { configsOf } from "../../src/lines/values.js";
import { loadSchemas, type Schemas } from "../../src/schemas/schemas.js";
import { fireSchedule, parseDuration, parseWhen, readScheduleDirective, scheduleDirective } from "../../src/pipeline/schedule.js";
import { readScheduleRecord } from "../../src/store/records.js";
import { SCHEMAS } from "../helpers.js";

let schemas: Schemas;
beforeAll(async () => {
  schemas = await loadSchemas(SCHEMAS);
});

describe("when and how long", () => {
  it("reads durations and times, and refuses anything else", () => {
    expect(["90s", "30m", "2h", "1d", "1h30m", "250ms"].map(parseDuration)).toEqual([90_000, 1_800_000, 7_200_000, 86_400_000, 5_400_000, 250]);
    expect(["", "90", "1x", "-5m", "0s", "m", "1h 30m"].map(parseDuration)).toEqual(Array(7).fill(undefined));
    const now = Date.parse("2026-12-06T00:00:00Z");
    expect(parseWhen("+90m", now)).toBe("2026-12-06T01:30:00.000Z");
    expect(parseWhen("2026-12-24T02:00:00+01:00", now)).toBe("2026-12-24T01:00:00.000Z");
    expect(parseWhen("2026-12-24", now)).toMatchObject({ reason: expect.stringContaining("RFC 3339") });
    expect(parseWhen("+soon", now)).toMatchObject({ reason: expect.stringContaining("+90s") });
  });

  it("reads back the directives it writes, and says what is wrong with others", () => {
    const make = { make: { id: "s-1", at: "2026-12-24T01:00:00.000Z", forMs: 60_000, lines: ["ticker:interval:1500"] } };
    expect(readScheduleDirective(scheduleDirective(make))).toEqual(make);
    expect(readScheduleDirective(scheduleDirective({ cancel: { id: "s-1" } }))).toEqual({ cancel: { id: "s-1" } });
    expect(readScheduleDirective("# schedule: {")).toContain("must be '# schedule: ' and JSON");
    expect(readScheduleDirective('# schedule: {"id":"s-1","lines":["a:b:c"]}')).toBe("a schedule needs at, for, or both");
    expect(readScheduleDirective('# schedule: {"id":"a b","lines":["a:b:c"],"forMs":5}')).toContain("needs an id");
  });
});

describe("fireSchedule", () => {
  const at = { revision: 7, seq: 3, time: "2026-12-06T00:00:00.000Z" };
  const context = () => ({ schemas, validators: new Map(), current: configsOf(new Map([...schemas].map(([app, s]) => [app, s.defaults]))), ...at });

  it("applies the lines as revisions of their own, then says the schedule is done", () => {
    const fired = fireSchedule({ id: "s-1", at: at.time, lines: ["ticker:interval:1500", "ticker:interval:100"], by: "ann" }, context());
    expect(fired.changes.map(({ change, revision }) => [change.key, change.value, revision])).toEqual([["interval", 1500, 8]]);
    expect(fired.rejected).toEqual(["ticker.interval must be > 200, got 100"]);
    expect(fired.rejectText).toContain("source=schedule:s-1 reason: ticker.interval must be > 200, got 100\nticker:interval:100\n");
    expect(fired.journalText).toContain("# rev=8 seq=3 time=2026-12-06T00:00:00.000Z source=schedule:s-1 by=ann\nticker:interval:1500\n");
    const done = fired.journalText.trimEnd().split("\n").at(-1)!;
    expect(readScheduleRecord(done)).toEqual({ done: { id: "s-1", outcome: "refused in part", by: "ann", app: "ticker" } });
    expect(fired.next).toBeUndefined();
  });

  it("makes a window's expiry, and at expiry puts back only the keys that still hold what it set", () => {
    const window = fireSchedule({ id: "s-2", at: at.time, forMs: 60_000, lines: ["ticker:interval:1500", "ticker:name:x"] }, context());
    expect(window.next).toEqual({
      id: "s-2",
      at: "2026-12-06T00:01:00.000Z",
      lines: ["ticker:interval:1500", "ticker:name:x"],
      restore: [
        { line: "ticker:interval:1000", holds: "ticker:interval:1500" },
        { line: "ticker:name:tick", holds: "ticker:name:x" },
      ],
    });
    const now = context();
    now.current = configsOf(new Map([["ticker", { ...schemas.get("ticker")!.defaults, interval: 1500, name: "someone else's" }]]));
    const expired = fireSchedule(window.next!, now);
    expect(expired.changes.map(({ change }) => `${change.key}=${String(change.value)}`)).toEqual(["interval=1000"]);
    expect(expired.markers).toEqual([9]);
    expect(expired.journalText).toContain("marker=schedule:s-2:kept:ticker reason: the end of s-2 left ticker.name as it was: it was changed since");
    expect(readScheduleRecord(expired.journalText.trimEnd().split("\n").at(-1)!)).toEqual({
      done: { id: "s-2", outcome: "expired", note: "the end of s-2 left ticker.name as it was: it was changed since", app: "ticker" },
    });
  });
});
