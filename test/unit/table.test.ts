import { describe, expect, it } from "vitest";
import { ConfigTable, type ChangeEvent } from "../../src/store/table.js";
import { capturedLogger } from "../helpers.js";

function table() {
  const { logger: log, lines } = capturedLogger();
  const apps = new Map([["ticker", { interval: 1000, limits: { min: 1, max: 2 } }]]);
  return { table: new ConfigTable(apps, 0, log), lines };
}

// a change given as the config it leaves: the table takes the value of its top-level key
const change = (revision: number, key: string, config: Record<string, unknown>) => ({
  app: "ticker",
  key,
  topValue: config[key.split(".")[0]!],
  revision,
  source: `cdp.new:${revision}`,
  time: "t",
});

describe("the live table", () => {
  it("reads apps and dotted keys synchronously", () => {
    const { table: t } = table();
    expect(t.get("ticker", "interval")).toBe(1000);
    expect(t.get("ticker", "limits.max")).toBe(2);
    expect(t.get("ticker")).toEqual({ interval: 1000, limits: { min: 1, max: 2 } });
    expect(t.get("nope", "x")).toBeUndefined();
    expect(t.get("ticker", "limits.nope")).toBeUndefined();
  });

  it("takes each change's revision and refuses a revision that goes back", () => {
    const { table: t } = table();
    t.apply(change(1, "interval", { interval: 1500 }));
    expect(t.revision).toBe(1);
    t.apply(change(3, "interval", { interval: 1600 })); // a filtered feed skips revisions
    expect(t.revision).toBe(3);
    expect(() => t.apply(change(2, "interval", { interval: 1700 }))).toThrow(/in order/);
    expect(t.get("ticker", "interval")).toBe(1600);
  });

  it("gives immutable snapshots that keep their revision's values", () => {
    const { table: t } = table();
    const before = t.snapshot();
    t.apply(change(1, "interval", { interval: 1500, limits: { min: 1, max: 2 } }));
    const after = t.snapshot();
    expect(before).toEqual({ revision: 0, apps: { ticker: { interval: 1000, limits: { min: 1, max: 2 } } } });
    expect(after.revision).toBe(1);
    expect(after.apps.ticker!.interval).toBe(1500);
    expect(Object.isFrozen(after.apps)).toBe(true);
    expect(() => {
      (after.apps.ticker as { interval: number }).interval = 1;
    }).toThrow(TypeError);
    expect(() => {
      (after.apps.ticker as { limits: { max: number } }).limits.max = 1;
    }).toThrow(TypeError);
  });

  it("tells app subscribers and the key's subscribers, with new value, old value, revision and source", () => {
    const { table: t } = table();
    const heard: ChangeEvent[] = [];
    t.subscribe("ticker", (event) => void heard.push(event));
    t.subscribe("ticker", "interval", (event) => void heard.push(event));
    t.subscribe("ticker", "limits", (event) => void heard.push(event));
    t.apply(change(1, "interval", { interval: 1500, limits: { min: 1, max: 2 } }));
    const event = { app: "ticker", key: "interval", value: 1500, previous: 1000, revision: 1, source: "cdp.new:1", time: "t", veto: expect.any(Function) };
    expect(heard).toEqual([event, event]);
    expect(heard[0]!.veto("no veto without a pipeline")).toBe(false);
  });

  it("tells a key's subscribers when a change above or below the key changes its value", () => {
    const { table: t } = table();
    const heard: [string, unknown, unknown][] = [];
    t.subscribe("ticker", "limits", ({ key, value, previous }) => void heard.push([key, value, previous]));
    t.subscribe("ticker", "limits.max", ({ key, value, previous }) => void heard.push([key, value, previous]));
    t.subscribe("ticker", "limits.min", ({ key, value, previous }) => void heard.push([key, value, previous]));
    t.apply(change(1, "limits.max", { interval: 1000, limits: { min: 1, max: 5 } }));
    t.apply(change(2, "limits", { interval: 1000, limits: { min: 0, max: 5 } }));
    expect(heard).toEqual([
      ["limits", { min: 1, max: 5 }, { min: 1, max: 2 }],
      ["limits.max", 5, 2],
      ["limits", { min: 0, max: 5 }, { min: 1, max: 5 }],
      ["limits.min", 0, 1],
    ]);
  });

  it("logs a subscriber that throws or rejects and still tells the others", async () => {
    const { table: t, lines } = table();
    const heard: number[] = [];
    t.subscribe("ticker", "interval", () => {
      throw new Error("subscriber bug");
    });
    t.subscribe("ticker", "interval", () => Promise.reject(new Error("async subscriber bug")));
    t.subscribe("ticker", "interval", ({ value }) => void heard.push(value as number));
    t.apply(change(1, "interval", { interval: 1500 }));
    expect(heard).toEqual([1500]);
    await new Promise((resolve) => setImmediate(resolve));
    const failures = lines.filter((line) => line.msg === "subscriber failed");
    expect(failures.map((line) => (line.err as { message: string }).message)).toEqual(["subscriber bug", "async subscriber bug"]);
    expect(t.revision).toBe(1);
  });

  it("stops telling a subscriber once it unsubscribes", () => {
    const { table: t } = table();
    const heard: number[] = [];
    const unsubscribe = t.subscribe("ticker", "interval", ({ revision }) => void heard.push(revision));
    t.apply(change(1, "interval", { interval: 1500 }));
    unsubscribe();
    t.apply(change(2, "interval", { interval: 1600 }));
    expect(heard).toEqual([1]);
  });
});
