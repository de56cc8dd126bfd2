// cdp embedded in a Node service, through the public API only.
import { readFileSync } from "node:fs";
import { appendFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { startCdp, type ChangeEvent } from "../src/index.js";
import { capturedLogger, readText, recordLines, SCHEMAS, waitUntil, dataDir } from "./helpers.js";

describe("the library API", () => {
  it("reads, snapshots and tells subscribers after the change is durable", async () => {
    const dir = await dataDir();
    const { logger } = capturedLogger();
    const cdp = await startCdp({ init: true, dir, schemas: SCHEMAS, logger });
    try {
      expect(cdp.get("ticker", "interval")).toBe(1000);
      const before = cdp.snapshot();
      const heard: { event: ChangeEvent; journal: string }[] = [];
      cdp.subscribe("ticker", "interval", (event) => {
        // the journal must already hold the change when a subscriber hears of it
        heard.push({ event, journal: readFileSync(join(dir, "cdp"), "utf8") });
      });
      const appHeard: string[] = [];
      cdp.subscribe("ticker", ({ key }) => void appHeard.push(key));

      await appendFile(join(dir, "cdp.new"), "ticker:interval:1500\nticker:name:x\n");
      await waitUntil(() => appHeard.length === 2);
      expect(heard).toHaveLength(1);
      expect(heard[0]!.event).toMatchObject({ app: "ticker", key: "interval", value: 1500, previous: 1000, revision: 1, source: "cdp.new:1" });
      expect(heard[0]!.journal).toContain("ticker:interval:1500\n");
      expect(appHeard).toEqual(["interval", "name"]);
      expect(cdp.get("ticker", "interval")).toBe(1500);
      expect(cdp.revision).toBe(2);
      expect(before.apps.ticker).toMatchObject({ interval: 1000 });
      expect(cdp.snapshot()).toMatchObject({ revision: 2, apps: { ticker: { interval: 1500, name: "x" } } });
    } finally {
      await cdp.stop();
    }
  });

  it("rejects through validators given at start and registered later", async () => {
    const dir = await dataDir();
    const { logger } = capturedLogger();
    const cdp = await startCdp({
      dir,
      schemas: SCHEMAS,
      logger,
      validators: { ticker: (config) => (config.name === "forbidden" ? "that name is forbidden" : undefined) },
    });
    try {
      cdp.registerValidator("ticker", (config) => {
        if ((config.interval as number) % 2 === 1) throw new Error("odd intervals beat with the neighbours");
      });
      expect(() => cdp.registerValidator("nope", () => undefined)).toThrow(/unknown app "nope"/);
      await appendFile(join(dir, "cdp.new"), "ticker:name:forbidden\nticker:interval:1501\nticker:interval:1502\n");
      await waitUntil(() => cdp.revision === 1);
      const rejects = await readText(join(dir, "cdp.rej"));
      expect(rejects).toContain("reason: ticker refused by its validator: that name is forbidden\nticker:name:forbidden\n");
      expect(rejects).toContain("reason: ticker refused by its validator: odd intervals beat with the neighbours\nticker:interval:1501\n");
      expect(cdp.get("ticker", "interval")).toBe(1502);
    } finally {
      await cdp.stop();
    }
  });

  it("keeps going when a subscriber throws, and logs it", async () => {
    const dir = await dataDir();
    const { logger, lines } = capturedLogger();
    const cdp = await startCdp({ init: true, dir, schemas: SCHEMAS, logger });
    try {
      cdp.subscribe("ticker", () => {
        throw new Error("broken subscriber");
      });
      const heard: unknown[] = [];
      cdp.subscribe("ticker", "interval", ({ value }) => void heard.push(value));
      await appendFile(join(dir, "cdp.new"), "ticker:interval:1500\nticker:interval:1600\n");
      await waitUntil(() => heard.length === 2);
      expect(heard).toEqual([1500, 1600]);
      expect(lines.filter((line) => line.msg === "subscriber failed")).toHaveLength(2);
    } finally {
      await cdp.stop();
    }
  });

  it("refuses to start on an invalid journal with a CdpError naming file and line", async () => {
    const dir = await dataDir();
    await writeFile(join(dir, "cdp"), "ticker:interval:1500\nticker:mode:turbo\n");
    await expect(startCdp({ init: true, dir, schemas: SCHEMAS, logger: capturedLogger().logger })).rejects.toMatchObject({
      name: "CdpError",
      code: "bootstrap",
      message: `${join(dir, "cdp")}:2: ticker.mode must be one of "fast", "slow", got "turbo"`,
    });
  });

  it("refuses a duration no timer takes (a timer of 2^31 ms fires after 1 ms) with a CdpError naming the option", async () => {
    const dir = await dataDir();
    for (const [options, name] of [
      [{ vetoWindowMs: 2 ** 31 }, "vetoWindowMs"],
      [{ pollIntervalMs: 0.5 }, "pollIntervalMs"],
      [{ http: { listen: "127.0.0.1:0", waitMs: Infinity } }, "http.waitMs"],
    ] as const) {
      await expect(startCdp({ dir, schemas: SCHEMAS, logger: capturedLogger().logger, ...options })).rejects.toMatchObject({
        name: "CdpError",
        code: "usage",
        message: expect.stringContaining(`${name} must be a whole number of milliseconds from 1 to 2147483647`),
      });
    }
  });

  it("finishes the batch in hand when stopped, and resumes after it", async () => {
    const dir = await dataDir();
    const lines = Array.from({ length: 2000 }, (_, i) => `ticker:interval:${1000 + i}\n`).join("");
    let cdp = await startCdp({ init: true, dir, schemas: SCHEMAS, logger: capturedLogger().logger });
    await appendFile(join(dir, "cdp.new"), lines);
    await waitUntil(() => cdp.revision > 0);
    await cdp.stop();
    const applied = cdp.revision;
    expect((await recordLines(join(dir, "cdp"))).length).toBe(applied);
    cdp = await startCdp({ init: true, dir, schemas: SCHEMAS, logger: capturedLogger().logger });
    try {
      expect(cdp.revision).toBe(applied);
      await waitUntil(() => cdp.revision === 2000);
      expect(await recordLines(join(dir, "cdp"))).toEqual(lines.trimEnd().split("\n"));
    } finally {
      await cdp.stop();
    }
  });
});
