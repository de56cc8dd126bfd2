import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import { parseLine } from "../../src/lines/parse.js";
import { loadSchemas, type Schemas } from "../../src/schemas/schemas.js";
import { validateChange, type AppValidator, type ParsedChange } from "../../src/schemas/validate.js";
import { configsOf, type AppConfig } from "../../src/lines/values.js";
import { SCHEMAS, dataDir } from "../helpers.js";

let schemas: Schemas;
beforeAll(async () => {
  schemas = await loadSchemas(SCHEMAS);
});

function judge(line: string, current: Record<string, AppConfig> = {}, validators: Record<string, AppValidator[]> = {}) {
  const parsed = parseLine(line) as ParsedChange;
  return validateChange(
    {
      schemas,
      validators: new Map(Object.entries(validators)),
      current: configsOf(new Map([...schemas].map(([app, schema]) => [app, current[app] ?? schema.defaults]))),
    },
    parsed,
  );
}

describe("decoding a value by the schema type of its key", () => {
  it.each([
    ["ticker:interval:1500", 1500],
    ["ticker:interval:  1500  ", 1500],
    ["ticker:name:007", "007"],
    ["ticker:name: a:b:c ", "a:b:c"],
    ['ticker:name:"  padded "', "  padded "],
    ['ticker:name:""', ""],
    ['ticker:name:"unclosed', '"unclosed'],
    ["ticker:name:true", "true"],
    ["ticker:enabled:false", false],
    ["ticker:ratio:0.25", 0.25],
    ["ticker:ratio:3", 3],
    ['ticker:tags:["a", "b"]', ["a", "b"]],
    ['ticker:limits:{"min": 1, "max": 2}', { min: 1, max: 2 }],
    ["ticker:limits.max:7", 7],
    ["ticker:mode:fast", "fast"],
    ["ticker:label:12", 12],
    ["ticker:label:twelve", "twelve"],
    ["db:pool.min:3", 3],
  ])("accepts %j as %j", (line, value) => {
    const verdict = judge(line);
    expect(verdict).toMatchObject({ ok: true, change: { value } });
  });

  it.each([
    ["ticker:interval:abc", "ticker.interval must be an integer, got abc (not JSON)"],
    ["ticker:interval:1.5", "ticker.interval must be an integer, got 1.5"],
    ['ticker:interval:"1500"', 'ticker.interval must be an integer, got "1500"'],
    ["ticker:enabled:yes", "ticker.enabled must be true or false, got yes (not JSON)"],
    ["ticker:tags:a,b", "ticker.tags must be a JSON array, got a,b (not JSON)"],
    ["ticker:interval:", `ticker.interval has no value (write "" for an empty string)`],
    ["ticker:name:   ", `ticker.name has no value (write "" for an empty string)`],
  ])("rejects %j: %s", (line, reason) => {
    expect(judge(line)).toEqual({ ok: false, reason });
  });
});

describe("validating a change", () => {
  it.each([
    ["nope:interval:1", `unknown app "nope" (known apps: db, ticker)`],
    ["ticker:nope:1", `ticker has no key "nope" (it has interval, name, enabled, ratio, tags, limits, mode, label, token, meta)`],
    ["ticker:interval.deep:1", `ticker.interval has no key "deep"`],
    ["ticker:limits.nope:1", `ticker.limits has no key "nope" (it has min, max)`],
    ["ticker:interval:100", "ticker.interval must be > 200, got 100"],
    ["ticker:interval:60000", "ticker.interval must be < 60000, got 60000"],
    ["ticker:mode:medium", `ticker.mode must be one of "fast", "slow", got "medium"`],
    ['ticker:tags:["a", 1]', "ticker.tags.1 must be string, got 1"],
    ['ticker:limits:{"min": 1, "other": 2}', `ticker.limits has no key "other"`],
    ["db:host:not_a_host!", `db.host must match format "hostname", got "not_a_host!"`],
  ])("rejects %j: %s", (line, reason) => {
    expect(judge(line)).toEqual({ ok: false, reason });
  });

  it("never shows the value of a secret (writeOnly) key in a reason", () => {
    const verdict = judge("ticker:token:short");
    expect(verdict).toEqual({ ok: false, reason: "ticker.token must NOT have fewer than 8 characters (value hidden: secret key)" });
    expect(judge("ticker:token:long-enough")).toMatchObject({ ok: true, change: { secret: true } });
  });

  it("checks the app's whole config, so cross-field rules hold", () => {
    const current = { ticker: { ...schemas.get("ticker")!.defaults, interval: 10_000 } };
    expect(judge("ticker:mode:fast", current)).toEqual({ ok: false, reason: "ticker.interval must be <= 5000, got 10000" });
    expect(judge("ticker:mode:slow", current)).toMatchObject({ ok: true });
  });

  it("returns the new value of the changed top-level key with the previous value", () => {
    const verdict = judge("ticker:interval:1500");
    expect(verdict).toEqual({
      ok: true,
      change: {
        app: "ticker",
        key: "interval",
        path: ["interval"],
        value: 1500,
        previous: 1000,
        secret: false,
        topValue: 1500,
      },
    });
  });

  it("fills schema defaults, nested ones too", () => {
    expect(schemas.get("db")!.defaults).toEqual({ host: "localhost", pool: { min: 1, max: 10 } });
    expect(schemas.get("ticker")!.defaults).toEqual({ interval: 1000, name: "tick", enabled: true });
  });

  it("runs the app's validators on the whole config; a refusal or a throw rejects", () => {
    const ordered: AppValidator = (config) => {
      const limits = config.limits as { min?: number; max?: number } | undefined;
      if (limits?.min !== undefined && limits.max !== undefined && limits.min > limits.max) return "limits.min must not exceed limits.max";
    };
    const throwing: AppValidator = (config) => {
      if (config.name === "boom") throw new Error("the name boom is reserved");
    };
    const validators = { ticker: [ordered, throwing] };
    expect(judge('ticker:limits:{"min": 5, "max": 2}', {}, validators)).toEqual({
      ok: false,
      reason: "ticker refused by its validator: limits.min must not exceed limits.max",
    });
    expect(judge("ticker:name:boom", {}, validators)).toEqual({ ok: false, reason: "ticker refused by its validator: the name boom is reserved" });
    expect(judge('ticker:limits:{"min": 1, "max": 2}', {}, validators)).toMatchObject({ ok: true });
  });

  it("treats __proto__, constructor and prototype as plain names", () => {
    for (const line of ["ticker:__proto__:1", "ticker:constructor:1", "__proto__:x:1", "ticker:limits.__proto__:1"]) {
      expect(judge(line)).toMatchObject({ ok: false });
    }
    expect(({} as Record<string, unknown>).interval).toBeUndefined();
  });
});

describe("loading schemas", () => {
  it.each([
    ["bad.schema.json", "{ not json", "bad.schema.json:1:3: not valid JSON"],
    ["bad.schema.json", `{"type": "object", "properties": {"a": {"type": "integr"}}}`, "bad.schema.json: not a valid JSON Schema"],
    ["bad.schema.json", `{"type": "object", "unknownKeyword": 1}`, "bad.schema.json: not a valid JSON Schema"],
    ["bad.schema.json", `{"type": "string"}`, "bad.schema.json: an app's schema must describe an object"],
    ["no good.schema.json", `{"type": "object"}`, `"no good" is not a valid app name`],
  ])("refuses %s with %j", async (name, text, message) => {
    const dir = await dataDir();
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, name), text);
    await expect(loadSchemas(dir)).rejects.toMatchObject({ name: "CdpError", code: "bootstrap", message: expect.stringContaining(message) });
  });

  it("names the directory it cannot read", async () => {
    await expect(loadSchemas("/nonexistent/schemas")).rejects.toMatchObject({ code: "usage", message: expect.stringContaining("/nonexistent/schemas") });
  });
});

describe("judging one key alone (the schema takes each top-level key by itself)", () => {
  const item = fc.constantFrom<Record<string, unknown>>(
    { type: "integer", minimum: 0, maximum: 100 },
    { type: "integer", default: 7 },
    { type: "string", maxLength: 3 },
    { enum: ["a", "b", 1] },
    { type: ["integer", "null"] },
    { type: "boolean", default: true },
    { type: "object", properties: { a: { type: "integer", default: 1 }, b: { type: "string" } }, additionalProperties: false },
    { type: "object", properties: { a: { type: "integer" } }, required: ["a"] },
    { type: "array", items: { type: "integer" }, maxItems: 2 },
    { $ref: "#/$defs/third" },
    { anyOf: [{ type: "integer", multipleOf: 2 }, { type: "string" }] },
  );
  const schema = fc
    .record({
      properties: fc.array(item, { minLength: 1, maxLength: 4 }),
      pattern: fc.option(item),
      extra: fc.oneof(fc.constant<unknown>(undefined), fc.constant(false), fc.constant(true), item),
      required: fc.boolean(),
    })
    .map(({ properties, pattern, extra, required }) => ({
      type: "object",
      $defs: { third: { type: "integer", multipleOf: 3, default: 3 } },
      properties: Object.fromEntries(properties.map((each, i) => [`p${i}`, each])),
      ...(pattern ? { patternProperties: { "^x": pattern } } : {}),
      ...(extra === undefined ? {} : { additionalProperties: extra }),
      // only a key with a default can be required of the config a change starts from
      ...(required && properties.some((each) => "default" in each || "$ref" in each)
        ? { required: [`p${properties.findIndex((each) => "default" in each || "$ref" in each)}`] }
        : {}),
    }));
  const keys = fc.constantFrom("p0", "p1", "p2", "p3", "xa", "other", "p0.a", "p1.b", "xa.a");
  const values = fc.constantFrom(
    "1",
    "-5",
    "6",
    "101",
    '"s"',
    '"long"',
    "null",
    "true",
    '{"a":2}',
    '{"a":"x"}',
    '{"b":"y"}',
    "{}",
    "[1]",
    "[1,2,3]",
    '"a"',
    "b",
  );

  it("gives the verdicts, reasons and values the whole-config check gives, on random schemas and changes", async () => {
    const { compileAppSchema } = await import("../../src/schemas/schemas.js");
    const { PendingConfigs } = await import("../../src/lines/values.js");
    let byEntry = 0;
    fc.assert(
      fc.property(schema, fc.array(fc.tuple(keys, values), { minLength: 1, maxLength: 8 }), (source, lines) => {
        const app = compileAppSchema("a", "a.schema.json", source);
        fc.pre(app.validate(structuredClone(app.defaults)));
        if (app.keyCheck) byEntry++;
        const whole = { ...app, keyCheck: undefined };
        const base = configsOf(new Map([["a", app.defaults]]));
        const [one, all] = [new PendingConfigs(base), new PendingConfigs(base)];
        for (const [key, value] of lines) {
          const parsed = parseLine(`a:${key}:${value}`) as ParsedChange;
          const alone = validateChange({ schemas: new Map([["a", app]]), validators: new Map(), current: one }, structuredClone(parsed));
          const checked = validateChange({ schemas: new Map([["a", whole]]), validators: new Map(), current: all }, structuredClone(parsed));
          expect(alone).toEqual(checked);
          if (alone.ok) one.set("a", alone.change.path[0]!, alone.change.topValue);
          if (checked.ok) all.set("a", checked.change.path[0]!, checked.change.topValue);
        }
        expect(one.config("a")).toEqual(all.config("a"));
      }),
      { numRuns: 200 },
    );
    expect(byEntry).toBeGreaterThan(50); // the schemas drawn do take the per-key path
  });

  it("judges with a schema too large for ajv's optimising pass as with a small one", async () => {
    const { compileAppSchema } = await import("../../src/schemas/schemas.js");
    const wide = (count: number) => ({
      type: "object",
      properties: Object.fromEntries(Array.from({ length: count }, (_, i) => [`p${i}`, { type: "integer", minimum: 0, default: i }])),
      additionalProperties: false,
    });
    const [small, large] = [compileAppSchema("a", "a.schema.json", wide(10)), compileAppSchema("a", "a.schema.json", wide(2000))];
    expect(JSON.stringify(large.source).length).toBeGreaterThan(64 << 10); // compiled without the pass
    expect(large.defaults).toMatchObject({ p0: 0, p9: 9, p1999: 1999 });
    const verdicts = (app: typeof small) =>
      ["a:p5:7", "a:p5:-1", "a:p5:x", "a:p99:1", 'a:p3:{"b":1}'].map((line) => {
        const verdict = validateChange(
          { schemas: new Map([["a", app]]), validators: new Map(), current: configsOf(new Map([["a", app.defaults]])) },
          parseLine(line) as ParsedChange,
        );
        return verdict.ok ? "accepted" : verdict.reason;
      });
    const [fromSmall, fromLarge] = [verdicts(small), verdicts(large)];
    expect(fromLarge.slice(0, 3)).toEqual(fromSmall.slice(0, 3));
    expect(fromLarge[0]).toBe("accepted");
    expect(fromLarge[1]).toMatch(/a\.p5 must be >= 0/);
    expect(fromLarge[3]).toBe("accepted"); // p99 exists only in the large one
    expect(fromSmall[3]).toMatch(/p99/);
    expect(fromLarge[4]).toEqual(fromSmall[4]);
    // the whole config checked at once, as at start-up
    expect(large.validate({ ...large.defaults })).toBe(true);
    expect(large.validate({ ...large.defaults, p7: -3 })).toBe(false);
    expect(large.validate.errors?.map((error) => error.instancePath)).toEqual(["/p7"]);
  });

  it("keeps a secret out of the reason when it checks one key alone", async () => {
    const { compileAppSchema } = await import("../../src/schemas/schemas.js");
    const app = compileAppSchema("a", "a.schema.json", {
      type: "object",
      properties: {
        token: { type: "string", writeOnly: true, minLength: 8 },
        db: { type: "object", properties: { pass: { type: "string", writeOnly: true, pattern: "^x" } } },
      },
      additionalProperties: { type: "integer" },
    });
    expect(app.keyCheck).toBeDefined();
    const reasons = ["a:token:abc", 'a:db:{"pass":"hunter2"}', "a:db.pass:hunter2"].map((line) => {
      const verdict = validateChange(
        { schemas: new Map([["a", app]]), validators: new Map(), current: configsOf(new Map([["a", {}]])) },
        parseLine(line) as ParsedChange,
      );
      return verdict.ok ? "accepted" : verdict.reason;
    });
    expect(reasons).toEqual([
      "a.token must NOT have fewer than 8 characters (value hidden: secret key)",
      'a.db.pass must match pattern "^x" (value hidden: secret key)',
      'a.db.pass must match pattern "^x" (value hidden: secret key)',
    ]);
    for (const reason of reasons) expect(reason).not.toMatch(/abc|hunter2/);
  });

  it("is not used where a rule spans keys or reaches outside the key", async () => {
    const { compileAppSchema } = await import("../../src/schemas/schemas.js");
    const spanning = [
      { type: "object", properties: { a: { type: "integer" }, b: { type: "integer" } }, dependentRequired: { a: ["b"] } },
      { type: "object", properties: { a: { type: "integer" } }, maxProperties: 3 },
      {
        type: "object",
        properties: { a: { type: "integer" } },
        if: { properties: { a: { const: 1 } } },
        // biome-ignore lint/suspicious/noThenProperty: a JSON Schema keyword, never awaited
        then: { properties: { a: { type: "integer", minimum: 2 } } },
      },
      { type: "object", properties: { a: { type: "integer" }, b: { type: "integer", maximum: { $data: "1/a" } } } },
      { type: "object", properties: { a: { type: "integer" }, self: { $ref: "#" } } },
      { type: "object", properties: { a: { type: "integer" } }, propertyNames: { maxLength: 3 } },
      { type: "object", properties: { a: { $id: "https://example.com/a", type: "integer" } } },
    ];
    for (const source of spanning) expect(compileAppSchema("a", "a.schema.json", source).keyCheck, JSON.stringify(source)).toBeUndefined();
    expect(
      compileAppSchema("a", "a.schema.json", { type: "object", properties: { a: { type: "integer" } }, required: ["a"], additionalProperties: false }).keyCheck,
    ).toBeDefined();
  });
});
