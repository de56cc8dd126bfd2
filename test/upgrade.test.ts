// Live schema upgrades: a changed schema takes effect at once if the configuration holds under
// it; otherwise the schemas in force stay and the refusal is recorded.
import { appendFile, cp, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { startCdp, type ChangeEvent } from "../src/index.js";
import { capturedLogger, cdp, readText, recordLines, SCHEMAS, startWatch, waitUntil, dataDir } from "./helpers.js";

async function schemaCopy(): Promise<string> {
  const dir = await dataDir();
  await cp(SCHEMAS, dir, { recursive: true });
  return dir;
}

async function editSchema(dir: string, app: string, edit: (schema: { properties: Record<string, Record<string, unknown>> }) => void): Promise<void> {
  const path = join(dir, `${app}.schema.json`);
  const schema = JSON.parse(await readFile(path, "utf8")) as { properties: Record<string, Record<string, unknown>> };
  edit(schema);
  // whole or not at all, as a deploy should write it: a watcher reading it half-written would
  // (rightly) refuse that reading first
  await writeFile(`${path}.tmp`, JSON.stringify(schema, null, 2));
  await rename(`${path}.tmp`, path);
}

describe("live schema upgrades", () => {
  it("takes a changed schema at once and tells subscribers of every value it changed", async () => {
    const schemas = await schemaCopy();
    const dir = await dataDir();
    const { logger } = capturedLogger();
    const live = await startCdp({ init: true, dir, schemas, logger, pollIntervalMs: 200 });
    try {
      const heard: ChangeEvent[] = [];
      live.subscribe("ticker", "interval", (event) => void heard.push(event));
      await editSchema(schemas, "ticker", (schema) => {
        schema.properties.interval!.default = 2000;
      });
      await waitUntil(() => heard.length === 1);
      expect(heard[0]).toMatchObject({ app: "ticker", key: "interval", value: 2000, previous: 1000, revision: 1, source: "schema:ticker.schema.json" });
      expect(live.get("ticker", "interval")).toBe(2000);
    } finally {
      await live.stop();
    }
    // the upgrade is a revision of its own, and a restart keeps it
    expect(await readText(join(dir, "cdp"))).toMatch(/^# rev=1 seq=0 time=\S+ source=schema:ticker\.schema\.json\n$/);
    const restarted = await startCdp({ init: true, dir, schemas, logger: capturedLogger().logger });
    expect(restarted.revision).toBe(1);
    expect(restarted.get("ticker", "interval")).toBe(2000);
    await restarted.stop();
  });

  it("keeps the schemas in force, and records why in cdp.rej, when the configuration breaks the new one", async () => {
    const schemas = await schemaCopy();
    const dir = await dataDir();
    const watch = await startWatch(dir, ["--schemas", schemas, "--poll-interval", "200"]);
    await appendFile(join(dir, "cdp.new"), "ticker:interval:1500\n");
    await waitUntil(async () => (await recordLines(join(dir, "cdp"))).length === 1);

    await editSchema(schemas, "ticker", (schema) => {
      schema.properties.interval!.exclusiveMaximum = 1200;
    });
    await waitUntil(async () => (await readText(join(dir, "cdp.rej"))).includes("schema change refused"));
    const rejects = await readText(join(dir, "cdp.rej"));
    expect(rejects).toContain(
      `source=schemas reason: schema change refused: ${join(dir, "cdp")}:2: ticker.interval must be < 1200, got 1500\n${join(schemas, "ticker.schema.json")}\n`,
    );
    expect(watch.output()).toContain("schema change refused");

    // the old schema is still in force: 1600 is fine under it
    await appendFile(join(dir, "cdp.new"), "ticker:interval:1600\n");
    await waitUntil(async () => (await recordLines(join(dir, "cdp"))).length === 2);
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
    expect((await readText(join(dir, "cdp.rej"))).match(/schema change refused/g)).toHaveLength(1); // not retried every second
  });

  it("refuses a schema that does not compile, and one removed while its app has values", async () => {
    const schemas = await schemaCopy();
    const dir = await dataDir();
    const watch = await startWatch(dir, ["--schemas", schemas, "--poll-interval", "200"]);
    await appendFile(join(dir, "cdp.new"), "db:pool.max:20\n");
    await waitUntil(async () => (await recordLines(join(dir, "cdp"))).length === 1);

    await writeFile(join(schemas, "ticker.schema.json"), "{ not json");
    await waitUntil(async () => (await readText(join(dir, "cdp.rej"))).includes("ticker.schema.json:1:3: not valid JSON"));
    await cp(join(SCHEMAS, "ticker.schema.json"), join(schemas, "ticker.schema.json"));

    await rm(join(schemas, "db.schema.json"));
    await waitUntil(async () => (await readText(join(dir, "cdp.rej"))).includes(`unknown app "db"`));
    await appendFile(join(dir, "cdp.new"), "db:pool.max:30\n");
    await waitUntil(async () => (await recordLines(join(dir, "cdp"))).length === 2);
    watch.child.kill("SIGTERM");
  });

  it("adds an app when its schema appears, and drops one without values when its schema goes", async () => {
    const schemas = await schemaCopy();
    const dir = await dataDir();
    const watch = await startWatch(dir, ["--schemas", schemas, "--poll-interval", "200"]);
    await writeFile(join(schemas, "mailer.schema.json"), JSON.stringify({ type: "object", properties: { host: { type: "string", default: "mx" } } }));
    await waitUntil(() => watch.output().includes('"schemas upgraded"') && watch.output().includes("mailer"));
    await appendFile(join(dir, "cdp.new"), "mailer:host:smtp.example\n");
    await waitUntil(async () => (await recordLines(join(dir, "cdp"))).length === 1);
    expect(JSON.parse((await cdp(["get", "--dir", dir, "--schemas", schemas, "mailer"])).output)).toEqual({ host: "smtp.example" });

    await rm(join(schemas, "db.schema.json"));
    await waitUntil(() => (watch.output().match(/"schemas upgraded"/g) ?? []).length === 2);
    await appendFile(join(dir, "cdp.new"), "db:pool.max:30\n");
    await waitUntil(async () => (await readText(join(dir, "cdp.rej"))).includes(`unknown app "db"`));
    watch.child.kill("SIGTERM");
  });
});

describe("records that must stay two lines", () => {
  it("keeps every committed rejection across a restart when a refused schema file's name holds a newline", async () => {
    const schemas = await schemaCopy();
    const dir = await dataDir();
    let watch = await startWatch(dir, ["--schemas", schemas, "--poll-interval", "200"]);
    await appendFile(join(dir, "cdp.new"), "broken\nticker:interval:100\nnope:x:1\n");
    await waitUntil(async () => (await recordLines(join(dir, "cdp.rej"))).length === 3);
    await writeFile(join(schemas, "evil\n# seq=1 time=x source=y reason: z.schema.json"), "{}");
    await waitUntil(async () => (await recordLines(join(dir, "cdp.rej"))).length === 4);
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
    const before = await readText(join(dir, "cdp.rej"));
    expect(before.split("\n").filter((line) => line !== "")).toHaveLength(8); // header and text, four times
    await rm(join(schemas, "evil\n# seq=1 time=x source=y reason: z.schema.json"));
    watch = await startWatch(dir, ["--schemas", schemas]);
    await appendFile(join(dir, "cdp.new"), "ticker:interval:1500\n");
    await waitUntil(async () => (await readText(join(dir, "cdp"))).includes("ticker:interval:1500"));
    expect(await readText(join(dir, "cdp.rej"))).toBe(before);
    watch.child.kill("SIGTERM");
  });
});
