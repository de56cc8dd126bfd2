// Schema versions with migrations up and down (x-cdp-version, x-cdp-migrations): a live config
// changes shape and goes back, at start and while running, all or nothing.
import { readFileSync } from "node:fs";
import { appendFile, mkdir, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { isDeepStrictEqual } from "node:util";
import { describe, expect, it } from "vitest";
import { startCdp, type ChangeEvent } from "../src/index.js";
import { migrateConfig, type Operation } from "../src/schemas/migrations.js";
import { fleetArgs, startEtcd } from "./etcd.js";
import { capturedLogger, cdp, dataDir, FLEET_TIMEOUT, getConfig, readText, runCdp, startWatch, tempDir, waitUntil } from "./helpers.js";

const v1 = {
  "x-cdp-version": 1,
  type: "object",
  additionalProperties: false,
  properties: { user_id: { type: "string" }, limit: { type: "integer", default: 5 } },
};
const step2 = { up: [{ op: "move", from: "/user_id", path: "/userId" }], down: [{ op: "move", from: "/userId", path: "/user_id" }] };
const step3 = { up: [{ op: "add", path: "/region", value: "us" }], down: [{ op: "remove", path: "/region" }] };
const v2 = {
  "x-cdp-version": 2,
  "x-cdp-migrations": { "2": step2 },
  type: "object",
  additionalProperties: false,
  properties: { userId: { type: "string" }, limit: { type: "integer", default: 5 } },
};
const v3 = {
  ...v2,
  "x-cdp-version": 3,
  "x-cdp-migrations": { "2": step2, "3": step3 },
  properties: { ...v2.properties, region: { type: "string" } },
};

/** A schema directory holding `snow` at the given schema (written whole, as a deploy does). */
async function putSchema(dir: string, schema: object): Promise<void> {
  await mkdir(dir, { recursive: true });
  const path = join(dir, "snow.schema.json");
  await writeFile(`${path}.tmp`, JSON.stringify(schema, null, 2));
  await rename(`${path}.tmp`, path);
}

async function snowDataDir(schema: object = v1): Promise<{ dir: string; schemas: string }> {
  const schemas = join(await tempDir(), "schemas");
  await putSchema(schemas, schema);
  return { dir: await dataDir(schemas), schemas };
}

/** A data directory at version 1 whose journal holds snow:user_id:alice, written by a watcher now stopped. */
async function snowWithAlice(): Promise<{ dir: string; schemas: string }> {
  const { dir, schemas } = await snowDataDir();
  const watch = await startWatch(dir, ["--schemas", schemas]);
  await appendFile(join(dir, "cdp.new"), "snow:user_id:alice\n");
  await waitUntil(async () => (await readText(join(dir, "cdp"))).includes("snow:user_id:alice"));
  watch.child.kill("SIGTERM");
  expect(await watch.exited).toBe(0);
  return { dir, schemas };
}

describe("JSON Patch conformance (json-patch-test-suite) through the migration path", () => {
  it("applies every case whose document is an object as the suite expects, and refuses every error case", () => {
    const suite = ["tests.json", "spec_tests.json"].flatMap(
      (name) =>
        JSON.parse(readFileSync(new URL(`../node_modules/json-patch-test-suite/${name}`, import.meta.url), "utf8")) as {
          doc: unknown;
          patch: Operation[];
          expected?: unknown;
          error?: string;
          disabled?: boolean;
          comment?: string;
        }[],
    );
    const cases = suite.filter((test) => !test.disabled && typeof test.doc === "object" && test.doc !== null && !Array.isArray(test.doc));
    expect(cases.length).toBeGreaterThan(60);
    const wrong: string[] = [];
    for (const test of cases) {
      let result: ReturnType<typeof migrateConfig>;
      try {
        result = migrateConfig("t", test.doc as Record<string, unknown>, [{ from: 1, to: 2, operations: test.patch }]);
      } catch (error) {
        wrong.push(`${test.comment ?? JSON.stringify(test.patch)}: threw ${(error as Error).message}`);
        continue;
      }
      if (test.error !== undefined) {
        if (result.ok) wrong.push(`${test.comment ?? test.error}: applied, but the suite expects "${test.error}"`);
      } else if (!result.ok) {
        // a document that stops being an object cannot be an app's config: the only refusal allowed
        if (!(typeof test.expected !== "object" || Array.isArray(test.expected) || test.expected === null))
          wrong.push(`${test.comment}: refused: ${result.reason}`);
      } else if (test.expected !== undefined && !isDeepStrictEqual(result.config, test.expected)) {
        wrong.push(`${test.comment}: got ${JSON.stringify(result.config)}`);
      }
    }
    expect(wrong).toEqual([]);
  });
});

describe("schema versions", () => {
  it("migrates a live config up when the schema file changes, announces the renamed key, and replays it after a restart", async () => {
    // a schema without x-cdp-version is version 1, and the journal records nothing of it until it is left
    const { "x-cdp-version": _, ...unversioned } = v1;
    const { dir, schemas } = await snowDataDir(unversioned);
    const { logger } = capturedLogger();
    const live = await startCdp({ dir, schemas, logger, pollIntervalMs: 100 });
    const heard: ChangeEvent[] = [];
    try {
      await appendFile(join(dir, "cdp.new"), "snow:user_id:alice\nsnow:limit:7\n");
      await waitUntil(() => live.get("snow", "limit") === 7);
      live.subscribe("snow", (event) => void heard.push(event));
      await putSchema(schemas, v2);
      await waitUntil(() => live.get("snow", "userId") === "alice");
      expect(live.get("snow")).toEqual({ userId: "alice", limit: 7 });
      expect(heard.map(({ key, value, previous }) => ({ key, value, previous }))).toEqual(
        expect.arrayContaining([
          { key: "user_id", value: undefined, previous: "alice" },
          { key: "userId", value: "alice", previous: undefined },
        ]),
      );
      expect(heard.every((event) => event.revision === 3 && event.source === "schema:snow.schema.json")).toBe(true);
      // lines in the new shape are taken at once; the old shape is gone
      await appendFile(join(dir, "cdp.new"), "snow:userId:bob\nsnow:user_id:carol\n");
      await waitUntil(async () => (await readText(join(dir, "cdp.rej"))).includes("user_id"));
      expect(live.get("snow", "userId")).toBe("bob");
    } finally {
      await live.stop();
    }
    const journal = await readText(join(dir, "cdp"));
    expect(journal.split("\n").filter((line) => line.includes(" schemas: "))).toHaveLength(1);
    expect(journal).toMatch(
      /^# rev=3 seq=2 time=\S+ source=schema:snow\.schema\.json schemas: \{"snow":\{"version":2,"from":1,"fromSchema":\{"type":"object",/m,
    );
    expect(await getConfig(dir, "snow", schemas)).toEqual({ userId: "bob", limit: 7 });
    const history = await cdp(["history", "--dir", dir, "snow"]);
    expect(history.output).toMatch(/^3 .*schema:snow\.schema\.json\s+snow\s+schema version 1 → 2$/m);
    expect(history.output).toMatch(/snow\.user_id\s+\(none\) → "alice"/);
  });

  it("goes back down with only the old file, from the steps the journal recorded, even after a restart", async () => {
    const { dir, schemas } = await snowDataDir();
    const first = await startCdp({ dir, schemas, logger: capturedLogger().logger, pollIntervalMs: 100 });
    await appendFile(join(dir, "cdp.new"), "snow:user_id:alice\n");
    await waitUntil(() => first.get("snow", "user_id") === "alice");
    await putSchema(schemas, v3);
    await waitUntil(() => first.get("snow", "region") === "us");
    expect(first.get("snow")).toEqual({ userId: "alice", limit: 5, region: "us" });
    await first.stop();

    // the v1 file knows no step: the way down is in the journal
    await putSchema(schemas, v1);
    const second = await startCdp({ dir, schemas, logger: capturedLogger().logger });
    try {
      expect(second.get("snow")).toEqual({ user_id: "alice", limit: 5 });
      expect(second.revision).toBe(3);
    } finally {
      await second.stop();
    }
    expect(await getConfig(dir, "snow", schemas)).toEqual({ user_id: "alice", limit: 5 });
    const history = await cdp(["history", "--dir", dir, "snow"]);
    expect(history.output).toContain("schema version 1 → 3");
    expect(history.output).toContain("schema version 3 → 1");
  });

  it("skips versions in one move at start, when the file changed while cdp was stopped", async () => {
    const { dir, schemas } = await snowWithAlice();

    await putSchema(schemas, v3);
    const again = await startWatch(dir, ["--schemas", schemas]);
    expect(again.output()).toContain("migrated snow from schema version 1 to 3");
    expect(await getConfig(dir, "snow", schemas)).toEqual({ userId: "alice", limit: 5, region: "us" });
    again.child.kill("SIGTERM");
    expect(await again.exited).toBe(0);
  });

  it("refuses a migration whose step fails or is missing: live, the schemas in force stay; at start, cdp does not start", async () => {
    const { dir, schemas } = await snowDataDir();
    const watch = await startWatch(dir, ["--schemas", schemas, "--poll-interval", "100"]);
    // no user_id yet: moving it fails
    await putSchema(schemas, v2);
    await waitUntil(async () => (await readText(join(dir, "cdp.rej"))).includes("schema change refused"));
    expect(await readText(join(dir, "cdp.rej"))).toContain(
      "schema change refused: snow 1 → 2: operation 1 (move /user_id → /userId) failed: nothing is at /user_id",
    );
    await appendFile(join(dir, "cdp.new"), "snow:user_id:alice\n");
    await waitUntil(async () => (await readText(join(dir, "cdp"))).includes("snow:user_id:alice"));
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);

    // version 3 without the step to 2: a release upgrade needs every step on the way
    await putSchema(schemas, { ...v3, "x-cdp-migrations": { "3": step3 } });
    const refused = await cdp(["watch", "--dir", dir, "--schemas", schemas]);
    expect(refused.code).toBe(2);
    expect(refused.output).toContain(`the schemas in ${schemas} cannot be taken: snow cannot go from version 1 to 2: "x-cdp-migrations" has no step "2"`);
    // what is in force is what the journal holds: version 1
    expect(await getConfig(dir, "snow", schemas)).toEqual({ user_id: "alice", limit: 5 });
  });

  it("refuses a schema nested thousands deep (a migration's value) everywhere it is read, and keeps running on the schemas in force", async () => {
    const { dir, schemas } = await snowDataDir();
    const live = await startCdp({ dir, schemas, logger: capturedLogger().logger, pollIntervalMs: 100, http: { listen: "127.0.0.1:0" } });
    try {
      // JSON text, as no recursive JSON.stringify could write it
      const deepValue = `${'{"a":'.repeat(10_000)}{}${"}".repeat(10_000)}`;
      const step = `{"up":[{"op":"add","path":"/deep","value":${deepValue}}],"down":[{"op":"remove","path":"/deep"}]}`;
      const text = `{"x-cdp-version":2,"x-cdp-migrations":{"2":${step}},"type":"object","properties":{"user_id":{"type":"string"},"limit":{"type":"integer","default":5},"deep":{"type":"object"}}}`;
      const next = join(await tempDir(), "next");
      await mkdir(next);
      await writeFile(join(next, "snow.schema.json"), text);
      const plan = await cdp(["plan", "--dir", dir, "--schemas", next]);
      expect(plan.code).toBe(1);
      expect(plan.output).toContain(`${join(next, "snow.schema.json")}: nested deeper than 200 levels`);
      expect(plan.output).not.toMatch(/RangeError|call stack/);
      const post = (files: unknown) =>
        fetch(`${live.url}/v1/plan`, {
          method: "POST",
          body: `{"files":${JSON.stringify(files).replace('"PLACE"', text)}}`,
          headers: { "content-type": "application/json" },
        });
      const asObject = await post({ "snow.schema.json": "PLACE" });
      expect(asObject.status).toBe(400);
      expect(((await asObject.json()) as { error: string }).error).toContain("nested deeper than 200 levels");
      // the schema as a string: parsed by cdp, and refused like the file
      const asText = await fetch(`${live.url}/v1/plan`, {
        method: "POST",
        body: JSON.stringify({ files: { "snow.schema.json": text } }),
        headers: { "content-type": "application/json" },
      });
      expect(asText.status).toBe(409);
      expect(((await asText.json()) as { reason: string }).reason).toContain("nested deeper than 200 levels");
      // the live schema directory gets the file: refused, the version in force stays, cdp goes on
      await writeFile(join(schemas, "snow.schema.json.tmp"), text);
      await rename(join(schemas, "snow.schema.json.tmp"), join(schemas, "snow.schema.json"));
      await waitUntil(async () => (await readText(join(dir, "cdp.rej"))).includes("nested deeper than 200 levels"));
      expect(live.schemaVersion("snow")).toBe(1);
      await appendFile(join(dir, "cdp.new"), "snow:user_id:alice\n");
      await waitUntil(() => live.get("snow", "user_id") === "alice");
    } finally {
      await live.stop();
    }
  });

  it("refuses a malformed version or step when the schema is loaded, naming the file", async () => {
    const schemas = join(await tempDir(), "schemas");
    await putSchema(schemas, { ...v2, "x-cdp-migrations": { "2": { up: [{ op: "rename", path: "/a" }], down: [] } } });
    const bad = await cdp(["check", "--schemas", schemas], "snow:limit:3\n");
    expect(bad.code).toBe(2);
    expect(bad.output).toContain(
      `${join(schemas, "snow.schema.json")}: "x-cdp-migrations"["2"].up[0]: Operation \`op\` property is not one of operations defined in RFC-6902`,
    );
    await putSchema(schemas, { ...v2, "x-cdp-version": 0 });
    expect((await cdp(["check", "--schemas", schemas], "snow:limit:3\n")).output).toContain(`"x-cdp-version" must be an integer of at least 1, got 0`);
    await putSchema(schemas, { ...v1, "x-cdp-migrations": { "2": step2 } });
    expect((await cdp(["check", "--schemas", schemas], "snow:limit:3\n")).output).toContain(`"x-cdp-migrations"["2"]: leads past "x-cdp-version" 1`);
  });

  it("previews a schema change with cdp plan, without writing: versions, renamed, added and changed keys; exit 1 with the reason when refused", async () => {
    const { dir } = await snowWithAlice();
    const journal = await readText(join(dir, "cdp"));

    const next = join(await tempDir(), "next");
    // a step changes the whole config, defaults included: a new default reaches a migrated app through a step
    const raise = { up: [...step3.up, { op: "replace", path: "/limit", value: 10 }], down: [...step3.down, { op: "replace", path: "/limit", value: 5 }] };
    await putSchema(next, { ...v3, "x-cdp-migrations": { "2": step2, "3": raise }, properties: { ...v3.properties, limit: { type: "integer", default: 10 } } });
    const plan = await cdp(["plan", "--dir", dir, "--schemas", next]);
    expect(plan.code).toBe(0);
    expect(plan.output).toContain(["snow: version 1 → 3", "  renamed  user_id → userId", '  added    region: "us"', "  changed  limit: 5 → 10"].join("\n"));
    expect(plan.output).toContain(`the configuration holds under ${next}`);
    const json = await cdp(["plan", "--dir", dir, "--schemas", next, "--json"]);
    expect(JSON.parse(json.output.slice(0, json.output.lastIndexOf("}") + 1))).toEqual({
      ok: true,
      apps: [{ app: "snow", from: 1, to: 3, added: { region: "us" }, removed: [], renamed: { user_id: "userId" }, changed: { limit: { from: 5, to: 10 } } }],
    });

    await putSchema(next, { ...v3, "x-cdp-migrations": { "2": { ...step2, up: [{ op: "test", path: "/user_id", value: "bob" }, ...step2.up] }, "3": step3 } });
    const refused = await cdp(["plan", "--dir", dir, "--schemas", next]);
    expect(refused.code).toBe(1);
    expect(refused.output).toContain("cdp: refused: snow 1 → 2: operation 1 (test /user_id) failed: the value at /user_id is not the one the test expects");
    expect(await readText(join(dir, "cdp"))).toBe(journal); // nothing written
  });

  it("previews without a secret value: a key secret on either side, what a step copies or moves from it, a refusal's words (CLI and HTTP)", async () => {
    const secret = "hunter2-Secret-Value";
    const withToken = { ...v1, properties: { ...v1.properties, tok: { type: "string", writeOnly: true } } };
    const { dir, schemas } = await snowDataDir(withToken);
    const live = await startCdp({ dir, schemas, logger: capturedLogger().logger, http: { listen: "127.0.0.1:0" } });
    try {
      await appendFile(join(dir, "cdp.new"), `snow:user_id:alice\nsnow:tok:${secret}\n`);
      await waitUntil(() => live.revision === 2);
      const next = join(await tempDir(), "next");
      const plans: string[] = [];
      const preview = async (schema: object) => {
        await putSchema(next, schema);
        const printed = [await cdp(["plan", "--dir", dir, "--schemas", next]), await cdp(["plan", "--dir", dir, "--schemas", next, "--json"])];
        const served = await fetch(`${live.url}/v1/plan`, {
          method: "POST",
          body: JSON.stringify({ files: { "snow.schema.json": schema } }),
          headers: { "content-type": "application/json" },
        });
        plans.push(...printed.map(({ output }) => output), await served.text());
        return printed[1]!;
      };
      // the new file no longer says writeOnly
      const dropped = await preview({
        ...withToken,
        "x-cdp-version": 2,
        "x-cdp-migrations": { "2": { up: [], down: [] } },
        properties: { ...withToken.properties, tok: { type: "string" } },
      });
      expect(dropped.code).toBe(0);
      // masked on both sides, the value is no change to show (before this plan said "to": the value)
      expect(JSON.parse(dropped.output.slice(0, dropped.output.lastIndexOf("}") + 1))).toMatchObject({ ok: true, apps: [{ app: "snow", changed: {} }] });
      // a step copies the secret to a key that is not secret, and moves it to another
      const copy = {
        up: [
          { op: "copy", from: "/tok", path: "/note" },
          { op: "move", from: "/tok", path: "/auth" },
        ],
        down: [
          { op: "move", from: "/auth", path: "/tok" },
          { op: "remove", path: "/note" },
        ],
      };
      const copied = await preview({
        ...withToken,
        "x-cdp-version": 2,
        "x-cdp-migrations": { "2": copy },
        properties: { user_id: { type: "string" }, limit: { type: "integer", default: 5 }, note: { type: "string" }, auth: { type: "string" } },
      });
      expect(copied.code).toBe(0);
      expect(copied.output).toContain('"note": "[secret]"');
      // the new schema refuses the secret's value: the refusal names the key, not the value
      const refused = await preview({
        ...withToken,
        "x-cdp-version": 2,
        "x-cdp-migrations": { "2": { up: [], down: [] } },
        properties: { ...withToken.properties, tok: { type: "integer" } },
      });
      expect(refused.code).toBe(1);
      expect(refused.output).toContain('snow 1 → 2: after step "2" (up), the config does not hold: snow.tok must be integer, got "[secret]"');
      for (const text of plans) expect(text).not.toContain(secret);
      // a key the new version drops without a step to move or remove it: the step is named
      const stray = await preview({ ...v2, properties: { userId: { type: "string" }, limit: { type: "integer", default: 5 } } });
      expect(stray.output).toContain(
        'snow 1 → 2: after step "2" (up), the config does not hold: snow has no key "tok" (version 2 has no such key: a step must move or remove it)',
      );
    } finally {
      await live.stop();
    }
  });

  it("tells which version is in force: events, /v1/config, /metrics, cdp status; code that expects another refuses to start", async () => {
    const { dir, schemas } = await snowDataDir();
    await expect(startCdp({ dir, schemas, logger: capturedLogger().logger, expect: { snow: 2 } })).rejects.toThrow(
      `this code expects snow at schema version 2, but ${join(schemas, "snow.schema.json")} is version 1`,
    );
    await putSchema(schemas, v2);
    const live = await startCdp({ dir, schemas, logger: capturedLogger().logger, expect: { snow: 2 }, pollIntervalMs: 100, http: { listen: "127.0.0.1:0" } });
    try {
      const heard: ChangeEvent[] = [];
      live.subscribe("snow", "userId", (event) => void heard.push(event));
      await appendFile(join(dir, "cdp.new"), "snow:userId:alice\n");
      await waitUntil(() => heard.length === 1);
      expect(heard[0]).toMatchObject({ value: "alice", version: 2 });
      const served = await fetch(`${live.url}/v1/config/snow`);
      expect(served.headers.get("cdp-schema-versions")).toBe("snow=2");
      expect(await served.json()).toEqual({ userId: "alice", limit: 5 });
      expect(await (await fetch(`${live.url}/metrics`)).text()).toContain('cdp_schema_version{app="snow"} 2');
      const status = await cdp(["status", "--dir", dir]);
      expect(status.output).toMatch(/^schemas .*snow \(version 2, [0-9a-f]{12}\)$/m);
      // cdp get: the config on stdout, the version on stderr
      const got = runCdp(["get", "--dir", dir, "snow.userId"]);
      expect(await got.exited).toBe(0);
      expect(JSON.parse(got.stdout())).toBe("alice");
      expect(got.output()).toContain("cdp: snow is at schema version 2\n");

      // a live change to a version this code does not expect is refused; version 2 stays
      await putSchema(schemas, v3);
      await waitUntil(async () => (await readText(join(dir, "cdp.rej"))).includes("schema change refused"));
      expect(await readText(join(dir, "cdp.rej"))).toContain(
        `schema change refused: this code expects snow at schema version 2, but ${join(schemas, "snow.schema.json")} is version 3`,
      );
      expect(live.get("snow")).toEqual({ userId: "alice", limit: 5 });
    } finally {
      await live.stop();
    }
    const status = await cdp(["status", "--dir", dir]);
    expect(status.output).toMatch(/snow \(version 2 in force, the file is version 3, [0-9a-f]{12}\)/);
    expect((await cdp(["get", "--dir", dir, "snow"])).output).toContain("cdp: snow is at schema version 2 (its file is version 3)\n");
  });

  it("is never half-migrated across kill -9 during migrations, at start and live: the old version or the new", async () => {
    const { dir, schemas } = await snowDataDir();
    // a journal long enough that replaying it (as a schema change does) takes a while
    const lines = Array.from({ length: 20_000 }, (_, i) => `snow:limit:${i}`);
    await writeFile(join(dir, "cdp"), `snow:user_id:alice\n${lines.join("\n")}\n`);
    const shapes = [
      { user_id: "alice", limit: 19_999 },
      { userId: "alice", limit: 19_999 },
    ];
    let kills = 0;
    for (let round = 0; round < 8; round++) {
      const live = round % 2 === 0;
      const watch = live ? await startWatch(dir, ["--schemas", schemas, "--poll-interval", "50"]) : runCdp(["watch", "--dir", dir, "--schemas", schemas]);
      await putSchema(schemas, round % 4 < 2 ? v2 : v1);
      await new Promise((resolve) => setTimeout(resolve, Math.random() * (live ? 120 : 250)));
      watch.child.kill("SIGKILL");
      await watch.exited;
      kills++;
      // whatever the moment, the journal replays, to one shape or the other, never a mix
      const got = runCdp(["get", "--dir", dir, "--schemas", schemas, "snow"]);
      expect(await got.exited, got.output()).toBe(0);
      expect(shapes).toContainEqual(JSON.parse(got.stdout()));
    }
    expect(kills).toBe(8);
    await putSchema(schemas, v2);
    const watch = await startWatch(dir, ["--schemas", schemas]);
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
    expect(await getConfig(dir, "snow", schemas)).toEqual(shapes[1]);
    // each recorded migration moved between the two versions, in turn
    const moves = [...(await readText(join(dir, "cdp"))).matchAll(/"snow":\{"version":(\d),"from":(\d)/g)].map(([, to, from]) => `${from}>${to}`);
    expect(moves.length).toBeGreaterThan(0);
    for (const [i, move] of moves.entries()) expect(move).toBe(i % 2 === 0 ? "1>2" : "2>1");
  });

  it("does not record a refusal for a schema file caught half-copied: it is judged again once written", async () => {
    const { dir, schemas } = await snowDataDir();
    const watch = await startWatch(dir, ["--schemas", schemas, "--poll-interval", "100", "--log-level", "debug"]);
    const path = join(schemas, "snow.schema.json");
    const text = JSON.stringify({ ...v1, properties: { ...v1.properties, limit: { type: "integer", default: 6 } } }, null, 2);
    await writeFile(path, text.slice(0, text.length / 2)); // as cp does: truncated, then written
    await waitUntil(() => watch.output().includes("judged again at the next look"));
    await appendFile(path, text.slice(text.length / 2));
    await waitUntil(() => watch.output().includes("schemas upgraded"));
    expect(await readText(join(dir, "cdp.rej"))).toBe("");
    // a file that stays broken is refused once it has been left alone for a moment
    await writeFile(path, "{");
    await waitUntil(async () => (await readText(join(dir, "cdp.rej"))).includes("schema change refused"));
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
  });

  it("previews over HTTP (POST /v1/plan) and serves the migration in /v1/history once taken", async () => {
    const { dir, schemas } = await snowDataDir();
    const live = await startCdp({ dir, schemas, logger: capturedLogger().logger, pollIntervalMs: 100, http: { listen: "127.0.0.1:0" } });
    try {
      await appendFile(join(dir, "cdp.new"), "snow:user_id:alice\n");
      await waitUntil(() => live.get("snow", "user_id") === "alice");
      const plan = (files: unknown) =>
        fetch(`${live.url}/v1/plan`, { method: "POST", body: JSON.stringify({ files }), headers: { "content-type": "application/json" } });
      const taken = await plan({ "snow.schema.json": v3 });
      expect(taken.status).toBe(200);
      expect(await taken.json()).toEqual({
        ok: true,
        apps: [{ app: "snow", from: 1, to: 3, added: { region: "us" }, removed: [], renamed: { user_id: "userId" }, changed: {} }],
      });
      const refused = await plan({ "snow.schema.json": { ...v3, "x-cdp-migrations": { "3": step3 } } });
      expect(refused.status).toBe(409);
      expect(await refused.json()).toEqual({ ok: false, reason: 'snow cannot go from version 1 to 2: "x-cdp-migrations" has no step "2"' });
      expect((await plan({ "../snow.schema.json": v3 })).status).toBe(400);
      expect(live.get("snow")).toEqual({ user_id: "alice", limit: 5 }); // previews change nothing

      await (await fetch(`${live.url}/v1/history`)).json(); // read once from the journal, then kept up to date
      await putSchema(schemas, v2);
      await waitUntil(() => live.schemaVersion("snow") === 2);
      const history = (await (await fetch(`${live.url}/v1/history?app=snow`)).json()) as { revision: number; migration?: unknown }[];
      expect(history[0]).toMatchObject({ revision: 2, app: "snow", migration: { from: 1, to: 2 } });
    } finally {
      await live.stop();
    }
  });

  it("takes a migration back down when a subscriber vetoes it, and does not take that file again until it changes", async () => {
    const { dir, schemas } = await snowDataDir();
    const first = await startCdp({ dir, schemas, logger: capturedLogger().logger, pollIntervalMs: 100, vetoWindowMs: 5000 });
    const versions: (number | undefined)[] = [];
    try {
      await appendFile(join(dir, "cdp.new"), "snow:user_id:alice\n");
      await waitUntil(() => first.get("snow", "user_id") === "alice");
      first.subscribe("snow", (event) => {
        versions.push(event.version);
        if (event.version === 2 && event.key === "userId") event.veto("the login service reads user_id");
      });
      await putSchema(schemas, v2);
      await waitUntil(() => versions.includes(2) && first.schemaVersion("snow") === 1);
      expect(first.get("snow")).toEqual({ user_id: "alice", limit: 5 });
      // the vetoed file is not taken again while it stays as it is
      await appendFile(join(dir, "cdp.new"), "snow:user_id:bob\n");
      await waitUntil(() => first.get("snow", "user_id") === "bob");
      expect(first.schemaVersion("snow")).toBe(1);
    } finally {
      await first.stop();
    }
    const history = await cdp(["history", "--dir", dir, "snow"]);
    expect(history.output).toMatch(/^3 .*veto:2\s+snow\s+schema version 2 → 1\s+\(the login service reads user_id\)$/m);
    expect(history.output).toMatch(/^2 .*schema:snow\.schema\.json\s+snow\s+schema version 1 → 2$/m);

    // nor at a restart; a changed file is taken
    const { logger, lines } = capturedLogger();
    const second = await startCdp({ dir, schemas, logger, pollIntervalMs: 100 });
    try {
      expect(second.schemaVersion("snow")).toBe(1);
      expect(second.get("snow")).toEqual({ user_id: "bob", limit: 5 });
      expect(lines.map((line) => line.msg)).toContain("snow stays at schema version 1: moving to version 2 was vetoed, and its file has not changed since");
      await putSchema(schemas, v3);
      await waitUntil(() => second.schemaVersion("snow") === 3);
      expect(second.get("snow")).toEqual({ userId: "bob", limit: 5, region: "us" });
    } finally {
      await second.stop();
    }
  });

  it(
    "in a fleet: the first host with a newer file migrates the fleet; an older host diverges and converges once upgraded; only --fleet-downgrade moves the fleet down",
    async () => {
      const { endpoints } = await startEtcd();
      const hosts = await Promise.all(["a", "b"].map(async (name) => ({ name, ...(await snowDataDir()) })));
      const [a, b] = hosts as [(typeof hosts)[0], (typeof hosts)[0]];
      const watch = (host: typeof a) => startWatch(host.dir, ["--schemas", host.schemas, ...fleetArgs({ endpoints }, "/cdp/versions", host.name)]);
      const stop = async (running: Awaited<ReturnType<typeof watch>>) => {
        running.child.kill("SIGTERM");
        expect(await running.exited).toBe(0);
      };
      const has = (host: typeof a, text: string) => waitUntil(async () => (await readText(join(host.dir, "cdp"))).includes(text));
      let runningA = await watch(a);
      let runningB = await watch(b);
      await appendFile(join(a.dir, "cdp.new"), "snow:user_id:alice\n");
      await has(b, "snow:user_id:alice");

      // a restarts with version 2: it moves the fleet; b, still on version 1, keeps its own and says so
      await stop(runningA);
      await putSchema(a.schemas, v2);
      runningA = await watch(a);
      expect(await getConfig(a.dir, "snow", a.schemas)).toEqual({ userId: "alice", limit: 5 });
      await has(b, "source=diverged:a:schema:snow.schema.json");
      expect(runningB.output()).toContain("this host cannot take a migration the fleet committed");
      expect(await getConfig(b.dir, "snow", b.schemas)).toEqual({ user_id: "alice", limit: 5 });
      await appendFile(join(a.dir, "cdp.new"), "snow:userId:bob\n");
      await has(a, "snow:userId:bob");

      // b upgraded: it reads the fleet's revisions again under version 2, and converges
      await stop(runningB);
      await putSchema(b.schemas, v2);
      runningB = await watch(b);
      await has(b, "snow:userId:bob");
      expect(await getConfig(b.dir, "snow", b.schemas)).toEqual({ userId: "bob", limit: 5 });

      // a restarted with the old file stays at the fleet's version 2 and never moves the fleet down
      await stop(runningA);
      await putSchema(a.schemas, v1);
      runningA = await watch(a);
      expect(runningA.output()).toContain("snow stays at schema version 2");
      await appendFile(join(b.dir, "cdp.new"), "snow:userId:carol\n");
      await has(a, "snow:userId:carol");
      expect(await getConfig(a.dir, "snow", a.schemas)).toEqual({ userId: "carol", limit: 5 });
      expect(await getConfig(b.dir, "snow", b.schemas)).toEqual({ userId: "carol", limit: 5 });

      // the operator moves the fleet down, explicitly: a (version 1 file) with --fleet-downgrade;
      // b, still on version 2, diverges, and converges once it runs version 1 too
      await stop(runningA);
      runningA = await startWatch(a.dir, ["--schemas", a.schemas, ...fleetArgs({ endpoints }, "/cdp/versions", "a"), "--fleet-downgrade"]);
      expect(await getConfig(a.dir, "snow", a.schemas)).toEqual({ user_id: "carol", limit: 5 });
      await has(b, "source=diverged:a:schema:snow.schema.json");
      expect(await getConfig(b.dir, "snow", b.schemas)).toEqual({ userId: "carol", limit: 5 });
      await stop(runningB);
      await putSchema(b.schemas, v1);
      runningB = await watch(b);
      expect(await getConfig(b.dir, "snow", b.schemas)).toEqual({ user_id: "carol", limit: 5 });
      const moves = [...(await readText(join(b.dir, "cdp"))).matchAll(/"snow":\{"version":(\d),"from":(\d)/g)].map(([, to, from]) => `${from}>${to}`);
      expect(moves).toEqual(["1>2", "2>1"]);
      await stop(runningA);
      await stop(runningB);
    },
    FLEET_TIMEOUT,
  );

  it("rolls back across a migration in today's shape, and compacts across migrations keeping the way back", async () => {
    const { dir, schemas } = await snowDataDir();
    const watch = await startWatch(dir, ["--schemas", schemas, "--poll-interval", "100"]);
    await appendFile(join(dir, "cdp.new"), "snow:user_id:alice\nsnow:limit:7\n");
    await waitUntil(async () => (await readText(join(dir, "cdp"))).includes("snow:limit:7"));
    await putSchema(schemas, v2);
    await waitUntil(async () => (await readText(join(dir, "cdp"))).includes('"from":1'));
    await appendFile(join(dir, "cdp.new"), "snow:userId:bob\nsnow:limit:9\n");
    await waitUntil(async () => (await readText(join(dir, "cdp"))).includes("snow:limit:9"));

    // revision 1 was user_id alice (version 1): in today's shape that is userId alice, limit 5
    const dry = await cdp(["rollback", "--dir", dir, "--to", "1", "--dry-run"]);
    expect(dry.code, dry.output).toBe(0);
    expect(dry.output.trim().split("\n").sort()).toEqual(["snow:limit:5", "snow:userId:alice"]);
    const rolled = await cdp(["rollback", "--dir", dir, "--to", "1"]);
    expect(rolled.code, rolled.output).toBe(0);
    expect(await getConfig(dir, "snow", schemas)).toEqual({ userId: "alice", limit: 5 });
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);

    // compacted to its last change: the versions and steps are kept, so version 1's file still goes back down
    const compacted = await cdp(["compact", "--dir", dir, "--keep", "1"]);
    expect(compacted.code, compacted.output).toBe(0);
    const journal = await readText(join(dir, "cdp"));
    expect(journal).not.toContain("snow:user_id:alice");
    expect(journal).toMatch(/^# seq=\d+ time=\S+ source=compaction schemas: \{"snow":\{"version":2,"schema":.*"steps":\{"2":/m);
    expect(await getConfig(dir, "snow", schemas)).toEqual({ userId: "alice", limit: 5 });
    await putSchema(schemas, v1);
    const again = await startWatch(dir, ["--schemas", schemas]);
    again.child.kill("SIGTERM");
    expect(await again.exited).toBe(0);
    expect(await getConfig(dir, "snow", schemas)).toEqual({ user_id: "alice", limit: 5 });
    // a rollback past the compacted history is refused as before
    const far = await cdp(["rollback", "--dir", dir, "--to", "1", "--dry-run"]);
    expect(far.code).toBe(1);
    expect(far.output).toContain("was compacted away");
  });

  it("refuses a migration whose result the app's validators refuse, live: the version in force stays", async () => {
    const { dir, schemas } = await snowDataDir();
    const { logger, lines } = capturedLogger();
    // the service's code: a user id must not be "root", whatever the version
    const validators = {
      snow: (config: Record<string, unknown>) => ((config.userId ?? config.user_id) === "root" ? "the user root may not log in" : undefined),
    };
    const live = await startCdp({ dir, schemas, logger, pollIntervalMs: 100, validators });
    try {
      await appendFile(join(dir, "cdp.new"), "snow:user_id:alice\n");
      await waitUntil(() => live.get("snow", "user_id") === "alice");
      // version 2 whose step renames and also sets the id to root: refused by the validator
      await putSchema(schemas, {
        ...v2,
        "x-cdp-migrations": { "2": { up: [...step2.up, { op: "replace", path: "/userId", value: "root" }], down: step2.down } },
      });
      await waitUntil(async () => (await readText(join(dir, "cdp.rej"))).includes("schema change refused"));
      expect(await readText(join(dir, "cdp.rej"))).toContain("schema change refused: snow 1 → 2: snow refused by its validator: the user root may not log in");
      expect(live.schemaVersion("snow")).toBe(1);
      expect(live.get("snow")).toEqual({ user_id: "alice", limit: 5 });
      expect(lines.some((line) => line.msg === "schema change refused: the schemas in force stay")).toBe(true);
    } finally {
      await live.stop();
    }
  });
});
