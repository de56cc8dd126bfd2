// Tentative changes: a subscriber that finds a change unhealthy vetoes it within the window, and
// cdp reverts it through the pipeline; unvetoed changes become permanent.
import { appendFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { startCdp, type Cdp, type ChangeEvent } from "../src/index.js";
import { capturedLogger, cdp, readText, SCHEMAS, waitUntil, dataDir } from "./helpers.js";

async function started(vetoWindowMs: number): Promise<{ dir: string; live: Cdp; lines: Record<string, unknown>[] }> {
  const dir = await dataDir();
  const { logger, lines } = capturedLogger();
  return { dir, live: await startCdp({ init: true, dir, schemas: SCHEMAS, logger, vetoWindowMs }), lines };
}

describe("tentative changes", () => {
  it("reverts a vetoed change through the pipeline, records why, and shows it in history", async () => {
    const { dir, live } = await started(10_000);
    try {
      const heard: ChangeEvent[] = [];
      live.subscribe("ticker", "interval", (event) => {
        heard.push(event);
        // a health check that runs a little while after the change
        if (event.value === 1500) setTimeout(() => expect(event.veto("ticks too slow for the SLA")).toBe(true), 20);
      });
      await appendFile(join(dir, "cdp.new"), "ticker:interval:1500\n");
      await waitUntil(() => heard.length === 2);
      expect(heard[1]).toMatchObject({ value: 1000, previous: 1500, revision: 2, source: "veto:1" });
      expect(live.get("ticker", "interval")).toBe(1000);
      expect(heard[1]!.veto("again")).toBe(false); // a revert is not itself tentative
    } finally {
      await live.stop();
    }
    expect(await readText(join(dir, "cdp"))).toMatch(/# rev=2 seq=1 time=\S+ source=veto:1 reason: ticks too slow for the SLA\nticker:interval:1000\n$/);
    const history = await cdp(["history", "--dir", dir, "--schemas", SCHEMAS]);
    expect(history.output).toMatch(/^2\s+\S+\s+veto:1\s+ticker\.interval\s+1500 → 1000 {2}\(ticks too slow for the SLA\)$/m);
  });

  it("makes a change permanent once the window closes", async () => {
    const { dir, live } = await started(1);
    try {
      const verdicts: boolean[] = [];
      live.subscribe("ticker", "interval", (event) => {
        setTimeout(() => verdicts.push(event.veto("too late")), 30);
      });
      await appendFile(join(dir, "cdp.new"), "ticker:interval:1500\n");
      await waitUntil(() => verdicts.length === 1);
      expect(verdicts).toEqual([false]);
      expect(live.get("ticker", "interval")).toBe(1500);
      expect(live.revision).toBe(1);
    } finally {
      await live.stop();
    }
  });

  it("does not revert a vetoed change whose key has changed since", async () => {
    const { dir, live, lines } = await started(10_000);
    try {
      let first: ChangeEvent | undefined;
      live.subscribe("ticker", "interval", (event) => {
        first ??= event;
      });
      await appendFile(join(dir, "cdp.new"), "ticker:interval:1500\nticker:interval:2500\n");
      await waitUntil(() => live.revision === 2);
      expect(first!.veto("unhealthy")).toBe(true);
      await waitUntil(() => lines.some((line) => line.msg === "veto not applied: the key has changed since"));
      expect(live.get("ticker", "interval")).toBe(2500);
      expect(live.revision).toBe(2);
    } finally {
      await live.stop();
    }
  });
});
