// Stage 3a: the apps' JSON Schemas, read and compiled once with ajv; ajv's errors as sentences.
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { Ajv, type AnySchemaObject, type ErrorObject, type ValidateFunction } from "ajv";
import { Ajv2020 } from "ajv/dist/2020.js";
import addFormatsModule from "ajv-formats";
import { CdpError } from "../errors.js";
import { keyLookup, unescapePointer, type KeyInfo } from "./keys.js";
import { readVersioning, versionKeywords, type Steps } from "./migrations.js";
import { linearRegExp } from "./patterns.js";
import { defineKey, describeValue, freezeDeep, getIn, isObject, nestsDeeperThan, type AppConfig } from "../lines/values.js";

const addFormats = addFormatsModule as unknown as typeof addFormatsModule.default;

/** The schema file of app NAME is NAME.schema.json. */
export const SCHEMA_SUFFIX = ".schema.json";
const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_-]{0,63}$/;

export type { KeyInfo } from "./keys.js";

export interface AppSchema {
  app: string;
  file: string;
  /** The app's config before any change: the schema's defaults. */
  defaults: AppConfig;
  /** Validates a whole config and fills in missing defaults (ajv `useDefaults`). */
  validate: ValidateFunction;
  /**
   * Checks one top-level key's value as the app's schema would in the whole config, when the
   * schema judges each key alone (see entryWise): a change is then checked without the rest of
   * the config. Undefined when the whole config must be checked.
   */
  keyCheck: KeyCheck | undefined;
  /** The key's info, or why it does not exist, to follow the app's name (`.limits has no key "x"`). Cached. */
  key(path: readonly string[]): KeyInfo | string;
  /** `x-cdp-version` (1 when absent) and the steps of `x-cdp-migrations` by the version they lead to. */
  version: number;
  steps: Steps;
  /** The schema as parsed: what the journal records of a version cdp has run with. */
  source: AnySchemaObject;
}

export type Schemas = ReadonlyMap<string, AppSchema>;

// allErrors so that `useDefaults` fills every default even when something else is wrong;
// no type coercion: "1500" is never silently an integer; $data for cross-field rules
// ("max": {"minimum": {"$data": "1/min"}}).
// patterns run in linear time on RE2 (patterns.ts).
const options = {
  strict: true,
  allErrors: true,
  useDefaults: true,
  allowUnionTypes: true,
  $data: true,
  logger: false,
  code: { regExp: linearRegExp },
} as const;

/** The text of every schema file in `dir`, by file name: what is compiled, and what a change of schemas is measured against. */
export type SchemaTexts = ReadonlyMap<string, string>;

export async function readSchemaTexts(dir: string): Promise<SchemaTexts> {
  let all: string[];
  try {
    all = await readdir(dir);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why = code === "ENOENT" ? "it does not exist" : code === "ENOTDIR" ? "it is not a directory" : (error as Error).message;
    throw new CdpError("usage", `cannot read the schema directory ${dir}: ${why}`);
  }
  const names = all.filter((name) => name.endsWith(SCHEMA_SUFFIX)).sort();
  if (names.length === 0) {
    // a watcher with no app would reject every line: refuse to start instead
    const ignored = all.filter((name) => name.endsWith(".json")).slice(0, 8);
    const seen = ignored.length > 0 ? ` (ignored: ${ignored.join(", ")}: a schema's file name is <app>${SCHEMA_SUFFIX})` : "";
    throw new CdpError("bootstrap", `no <app>${SCHEMA_SUFFIX} in the schema directory ${dir}${seen}`);
  }
  const texts = new Map<string, string>();
  for (const name of names) {
    try {
      texts.set(name, await readFile(join(dir, name), "utf8"));
    } catch (error) {
      throw new CdpError("bootstrap", `${join(dir, name)}: cannot read: ${(error as Error).message}`);
    }
  }
  return texts;
}

/** Load and compile every DIR/<app>.schema.json. Throws a CdpError naming the file and the fault. */
export async function loadSchemas(dir: string): Promise<Schemas> {
  return compileSchemas(dir, await readSchemaTexts(dir));
}

/** Compile schema files already read (so that what is compiled is exactly what was read). */
export function compileSchemas(dir: string, texts: SchemaTexts): Schemas {
  const compilers = schemaCompilers();
  const schemas = new Map<string, AppSchema>();
  for (const [name, text] of texts) {
    const file = join(dir, name);
    const app = name.slice(0, -SCHEMA_SUFFIX.length);
    if (!IDENTIFIER.test(app)) {
      throw new CdpError("bootstrap", `${file}: "${app}" is not a valid app name (letters, digits, '_' and '-', at most 64)`);
    }
    schemas.set(app, compileAppSchema(app, file, parseSchema(file, text), compilers));
  }
  return schemas;
}

type Pair = { draft7: Ajv; draft2020: Ajv2020 };
type Compilers = Pair & { large?: Pair };

/**
 * A schema whose JSON is this long is compiled without ajv's optimising pass: for 3,000
 * properties that pass took half the compile (975 → 433 ms) and a third of its garbage (76 →
 * 50 MB), which V8 kept as RSS long after start-up (120-205 MB after 5,000 changes, 122-150
 * without it). A small schema keeps it: rejecting lines ran ~15% slower unoptimised.
 */
const LARGE_SCHEMA = 64 << 10;

// one pair per set of schemas: two files may use the same $id
function schemaCompilers(optimize = true): Compilers {
  const withCode = { ...options, code: { ...options.code, optimize } };
  const compilers = { draft7: addFormats(new Ajv(withCode)), draft2020: addFormats(new Ajv2020(withCode)) };
  for (const keyword of versionKeywords) for (const ajv of Object.values(compilers)) ajv.addKeyword(keyword);
  return compilers;
}

/** Compile one app's schema (a file's, or a version the journal recorded); `file` names it in errors. */
export function compileAppSchema(app: string, file: string, schema: AnySchemaObject, compilers = schemaCompilers()): AppSchema {
  const versioning = readVersioning(schema);
  if (typeof versioning === "string") throw new CdpError("bootstrap", `${file}: ${versioning}`);
  const pair = JSON.stringify(schema).length < LARGE_SCHEMA ? compilers : (compilers.large ??= schemaCompilers(false));
  const ajv = /draft-0[467]/.test(String(schema.$schema ?? "")) ? pair.draft7 : pair.draft2020;
  if (!ajv.validateSchema(schema)) throw new CdpError("bootstrap", `${file}: not a valid JSON Schema: ${describeSchemaProblem(ajv.errors ?? [], schema)}`);
  let validate: ValidateFunction;
  try {
    validate = ajv.compile(schema);
  } catch (error) {
    throw new CdpError("bootstrap", `${file}: not a valid JSON Schema: ${(error as Error).message}`);
  }
  const defaults: Record<string, unknown> = {};
  validate(defaults); // fills the defaults; whether the result is valid is checked once the journal is read
  const keyCheck = entryWise(schema) ? keyChecks(schema, ajv) : undefined;
  return { app, file, defaults: freezeDeep(defaults), validate, keyCheck, key: keyLookup(schema), ...versioning, source: schema };
}

/**
 * One top-level key's value checked alone: null when it holds, the first error (its path from the
 * config's top) when not, undefined when it cannot be judged alone.
 */
export type KeyCheck = (key: string, value: unknown) => ErrorObject | null | undefined;

/**
 * A key's value is checked against what the root says of that key (its property, the patterns
 * its name matches, or additionalProperties), compiled once per shape: keys of the same schema
 * share one small validator, and a change costs the same whatever the size of the config and of
 * the schema.
 */
function keyChecks(schema: AnySchemaObject, ajv: Ajv | Ajv2020): KeyCheck {
  const shared = { ...("$defs" in schema ? { $defs: schema.$defs } : {}), ...("definitions" in schema ? { definitions: schema.definitions } : {}) };
  const properties = (schema.properties ?? {}) as Record<string, AnySchemaObject>;
  const patterns = Object.entries((schema.patternProperties ?? {}) as Record<string, AnySchemaObject>).map(
    ([pattern, child]) => [linearRegExp(pattern), child] as const,
  );
  const byShape = new Map<string, ValidateFunction | null>(); // by the value's schema; null: it does not compile alone
  const byRule = new Map<string, ValidateFunction | null>(); // by the property, or the patterns a name matches
  const compile = (key: string, named: boolean, matched: number[]): ValidateFunction | null => {
    const parts = [...(named ? [properties[key]!] : []), ...matched.map((index) => patterns[index]![1])];
    if (parts.length === 0) {
      const extra = schema.additionalProperties as AnySchemaObject | boolean | undefined;
      if (extra === false) return null;
      parts.push(typeof extra === "object" ? extra : {});
    }
    const valueSchema = parts.length === 1 ? parts[0]! : { allOf: parts };
    const shape = JSON.stringify(valueSchema);
    let validate = byShape.get(shape);
    if (validate === undefined) {
      try {
        validate = ajv.compile({ ...shared, type: "object", properties: { v: valueSchema } });
      } catch {
        validate = null; // refers to the rest of the schema: the whole config is checked
      }
      byShape.set(shape, validate);
    }
    return validate;
  };
  return (key, value) => {
    const named = Object.hasOwn(properties, key);
    const matched = patterns.flatMap(([pattern], index) => (pattern.test(key) ? [index] : []));
    const rule = named ? `property ${key}` : `patterns ${matched.join(",")}`;
    let validate = byRule.get(rule);
    if (validate === undefined) byRule.set(rule, (validate = compile(key, named, matched)));
    if (validate === null) return undefined;
    if (validate({ v: value })) return null;
    const error = validate.errors![0]!;
    return { ...error, instancePath: `/${key.replace(/~/g, "~0").replace(/\//g, "~1")}${error.instancePath.slice("/v".length)}` };
  };
}

// The root keywords under which each top-level key is judged alone. A change sets one key and
// never removes one, so `required` holds once the config it starts from is valid (it always is).
const ENTRY_WISE = new Set([
  "type",
  "properties",
  "patternProperties",
  "additionalProperties",
  "required",
  "default",
  "title",
  "description",
  "$comment",
  "$schema",
  "$id",
  "$defs",
  "definitions",
  "examples",
  "deprecated",
  "readOnly",
  "writeOnly",
  ...versionKeywords.map(({ keyword }) => keyword),
]);

/**
 * Whether the schema judges each top-level key alone: not when a rule spans keys
 * (dependentRequired, if/then, *Of, min/maxProperties, propertyNames …), refers to the root or to
 * other values ($ref "#", $data), or may not compile twice (a nested $id, another document).
 */
function entryWise(schema: AnySchemaObject): boolean {
  if (!Object.keys(schema).every((keyword) => ENTRY_WISE.has(keyword))) return false;
  const types: unknown[] = Array.isArray(schema.type) ? schema.type : [schema.type ?? "object"];
  return types.includes("object") && referencesStayBelow(schema, true);
}

function referencesStayBelow(node: unknown, root = false): boolean {
  if (Array.isArray(node)) return node.every((child) => referencesStayBelow(child));
  if (!isObject(node)) return true;
  if (!root && ("$id" in node || ("id" in node && typeof node.id === "string"))) return false;
  if ("$data" in node || "$dynamicRef" in node || "$recursiveRef" in node) return false;
  if ("$ref" in node && (typeof node.$ref !== "string" || !node.$ref.startsWith("#") || node.$ref === "#" || node.$ref === "#/")) return false;
  return Object.values(node).every((child) => referencesStayBelow(child));
}

/** How deep a schema file may nest: far beyond any real schema, far below what overflows the stack. */
export const MAX_SCHEMA_DEPTH = 200;

function parseSchema(file: string, text: string): AnySchemaObject {
  let schema: unknown;
  try {
    schema = JSON.parse(text);
  } catch (error) {
    throw new CdpError("bootstrap", `${file}:${jsonErrorPlace(text, (error as Error).message)}`);
  }
  // what compiles, migrates and masks a schema walks it recursively: a file nested thousands deep would overflow the stack
  if (nestsDeeperThan(schema, MAX_SCHEMA_DEPTH))
    throw new CdpError("bootstrap", `${file}: nested deeper than ${MAX_SCHEMA_DEPTH} levels (objects and arrays, a migration's values included)`);
  const isObjectSchema = typeof schema === "object" && schema !== null && ((schema as AnySchemaObject).type === "object" || "properties" in schema);
  if (!isObjectSchema) throw new CdpError("bootstrap", `${file}: an app's schema must describe an object ("type": "object")`);
  return schema as AnySchemaObject;
}

/** " LINE:COLUMN: not valid JSON: what", from JSON.parse's "… in JSON at position N". */
function jsonErrorPlace(text: string, message: string): string {
  const position = /at position (\d+)/.exec(message);
  const what = message.replace(/ in JSON at position \d+.*$/, "").replace(/ \(line \d+ column \d+\)$/, "");
  if (!position) return ` not valid JSON: ${what}`;
  const before = text.slice(0, Number(position[1]));
  const line = before.split("\n").length;
  return `${line}:${before.length - before.lastIndexOf("\n")}: not valid JSON: ${what}`;
}

/**
 * ajv's verdict on a schema, as one sentence: the most precise complaint (the deepest path;
 * there, the list of allowed values if there is one), instead of its raw list of every branch.
 */
function describeSchemaProblem(errors: ErrorObject[], schema: unknown): string {
  const depth = (error: ErrorObject) => error.instancePath.split("/").length;
  const deepest = Math.max(...errors.map(depth));
  const here = errors.filter((error) => depth(error) === deepest);
  const error = here.find((each) => each.keyword === "enum") ?? here.find((each) => each.keyword !== "anyOf" && each.keyword !== "oneOf") ?? here[0]!;
  const path = error.instancePath.split("/").slice(1).map(unescapePointer);
  const value = getIn(schema, path);
  const where = error.instancePath === "" ? "at the top" : `at ${error.instancePath}`;
  const allowed =
    error.keyword === "enum" ? `one of ${(error.params as { allowedValues: unknown[] }).allowedValues.map((v) => JSON.stringify(v)).join(", ")}` : undefined;
  const keyword = path.at(-1);
  return `${where}: ${keyword === undefined ? "the schema" : `"${keyword}"`} ${allowed ? `must be ${allowed}` : (error.message ?? "is invalid")}, got ${describeValue(value)}`;
}

/**
 * ajv's first error as a sentence naming app and key: `ticker.interval must be > 200, got 100`.
 * A secret key's value is never shown.
 */
export function describeSchemaError(schema: AppSchema, error: ErrorObject, config: AppConfig): string {
  const path = error.instancePath.split("/").slice(1).map(unescapePointer);
  const where = [schema.app, ...path].join(".");
  const info = path.length > 0 ? schema.key(path) : null;
  const secret = typeof info === "object" && info?.secret === true;
  const got = secret ? " (value hidden: secret key)" : `, got ${describeValue(maskSecrets(schema, path, getIn(config, path)))}`;
  const params = error.params as Record<string, unknown>;
  switch (error.keyword) {
    case "required":
      return `${where}.${String(params.missingProperty)} is required but has no value`;
    case "additionalProperties":
      return `${where} has no key "${String(params.additionalProperty)}"`;
    case "enum":
      return `${where} must be one of ${(params.allowedValues as unknown[]).map((v) => describeValue(v)).join(", ")}${got}`;
    default:
      return `${where} ${error.message ?? "is invalid"}${got}`;
  }
}

/** `value` (found at `path` in the app's config) with every value that holds a secret shown as "[secret]": what a message may show. */
export function maskSecrets(schema: AppSchema, path: readonly string[], value: unknown): unknown {
  if (!isObject(value)) return value;
  const shown: AppConfig = {};
  for (const [key, child] of Object.entries(value)) {
    const info = schema.key([...path, key]);
    // a value holding a secret deeper down is shown, with that secret masked
    defineKey(shown, key, typeof info === "object" && info.writeOnly ? "[secret]" : maskSecrets(schema, [...path, key], child));
  }
  return shown;
}

/**
 * The texts by which an app's secret values may show in a program's output: each secret leaf as
 * written, JSON-escaped and in base64, and each secret value's JSON. Longest first, for masking.
 */
export function secretTexts(schema: AppSchema, config: AppConfig): string[] {
  const found = new Set<string>();
  const leaves = (value: unknown): void => {
    if (isObject(value) || Array.isArray(value)) {
      found.add(JSON.stringify(value));
      for (const child of Object.values(value)) leaves(child);
    } else if (value !== null && value !== undefined) {
      const text = String(value);
      found.add(text).add(JSON.stringify(text).slice(1, -1)).add(Buffer.from(text).toString("base64").replace(/=+$/, ""));
    }
  };
  const walk = (value: unknown, path: string[]): void => {
    if (!isObject(value)) return;
    for (const [key, child] of Object.entries(value)) {
      const info = schema.key([...path, key]);
      if (typeof info !== "object") continue;
      if (info.writeOnly) leaves(child);
      else if (info.secret) walk(child, [...path, key]);
    }
  };
  walk(config, []);
  return [...found].filter((text) => text !== "").sort((a, b) => b.length - a.length);
}

/** `text` with every occurrence of the secrets (from secretTexts) shown as "[secret]". */
export function maskText(text: string, secrets: readonly string[]): string {
  let masked = text;
  for (const secret of secrets) masked = masked.split(secret).join("[secret]");
  return masked;
}

/** `value` (found at `path` in the app's config) without its secret (writeOnly) keys: what may be served. */
export function withoutSecrets(schema: AppSchema, path: readonly string[], value: unknown): unknown {
  if (!isObject(value)) return value;
  const shown: AppConfig = {};
  for (const [key, child] of Object.entries(value)) {
    const info = schema.key([...path, key]);
    if (typeof info === "object" && info.writeOnly) continue;
    defineKey(shown, key, withoutSecrets(schema, [...path, key], child));
  }
  return shown;
}
