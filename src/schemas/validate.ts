// Stage 3b: a parsed change -> an accepted change (with the app's whole new config), or a reason.
import type { Logger } from "pino";
import { linesOf, type InboxLine } from "../inbox/inbox.js";
import { parseLine, type ParsedLine } from "../lines/parse.js";
import { isSealed, openSealed } from "../lines/sealed.js";
import { describeSchemaError, type AppSchema, type KeyInfo, type Schemas } from "./schemas.js";
import {
  defineKey,
  freezeDeep,
  getIn,
  jsonTypeOf,
  nestsDeeperThan,
  setIn,
  configsOf,
  PendingConfigs,
  withValueBelow,
  type AppConfig,
  type Configs,
} from "../lines/values.js";

/** The code-level check of an app's whole config that a schema cannot express: return a reason to refuse. */
// biome-ignore lint/suspicious/noConfusingVoidType: a validator that finds nothing wrong may just not return
export type AppValidator = (config: AppConfig) => string | undefined | void;

export type ParsedChange = Extract<ParsedLine, { kind: "change" }>;

/** A change that passed every check, before it is durable. */
export interface ValidChange {
  app: string;
  key: string;
  path: string[];
  value: unknown;
  previous: unknown;
  /** The new value of the change's top-level key (path[0]), defaults filled in; frozen. */
  topValue: unknown;
  secret: boolean;
}

export type Verdict = { ok: true; change: ValidChange } | { ok: false; reason: string };

/** What validation needs besides the line: the schemas, the apps' current configs and their validators. */
export interface ValidationContext {
  schemas: Schemas;
  /** The apps' configs; `valueOf` alone is read where one key can be judged alone. */
  current: Configs;
  validators: ReadonlyMap<string, readonly AppValidator[]>;
}

const AT_TOP: readonly string[] = Object.freeze([]);

/** Check one change against its app's schema, its current config and its validators. */
export function validateChange(context: ValidationContext, line: ParsedChange): Verdict {
  const schema = context.schemas.get(line.app);
  if (!schema) return refuse(`unknown app "${line.app}"${known(context.schemas)}`);
  const info = schema.key(line.path);
  if (typeof info === "string") return refuse(`${line.app}${info}`);

  const decoded = decodeValue(line.valueText, info);
  if (!decoded.ok) return refuse(`${line.app}.${line.key} ${decoded.reason}`);

  const top = line.path[0]!;
  const below = line.path.length === 1 ? AT_TOP : line.path.slice(1);
  const validators = context.validators.get(line.app);
  const { current } = context;
  let before = current.valueOf(line.app, top); // the top-level key's value before
  let topValue: unknown;
  // the schema judges each top-level key alone (and no validator wants the whole config): only the changed one is checked
  const byKey = validators === undefined || validators.length === 0 ? schema.keyCheck : undefined;
  const alone = byKey?.(top, (topValue = withValueBelow(before, below, decoded.value)));
  if (alone) {
    const entry: Record<string, unknown> = {};
    defineKey(entry, top, topValue);
    return refuse(describeSchemaError(schema, alone, entry));
  }
  if (alone === undefined) {
    const whole = current.config(line.app);
    const config = setIn(whole, line.path, decoded.value);
    if (!schema.validate(config)) return refuse(describeSchemaError(schema, schema.validate.errors![0]!, config));
    const refusal = runValidators(schema, validators, config);
    if (refusal) return refuse(refusal);
    before = getIn(whole, [top]);
    topValue = getIn(config, [top]);
  }
  freezeDeep(topValue);
  const change = {
    app: line.app,
    key: line.key,
    path: line.path,
    value: getIn(topValue, below),
    previous: getIn(before, below),
    topValue,
    secret: info.secret,
  };
  return { ok: true, change };
}

/** The app's registered validators, in order; the first refusal (or throw) wins. */
export function runValidators(schema: AppSchema, validators: readonly AppValidator[] | undefined, config: AppConfig): string | undefined {
  for (const validator of validators ?? []) {
    let reason: ReturnType<AppValidator>;
    try {
      reason = validator(config);
    } catch (error) {
      reason = error instanceof Error ? error.message : String(error);
    }
    if (typeof reason === "string") return `${schema.app} refused by its validator: ${reason}`;
  }
  return undefined;
}

/** Deeper values are refused: validating and freezing them would recurse without bound. */
export const MAX_DEPTH = 64;

type Decoded = { ok: true; value: unknown } | { ok: false; reason: string };

/**
 * Decode a value's text by the schema type of its key: a string key takes the text as it is
 * (or a JSON-quoted string), every other type takes JSON of that type. A sealed value is opened
 * first (lines/sealed.ts).
 */
export function decodeValue(text: string, key: KeyInfo): Decoded {
  let trimmed = text.trim();
  if (isSealed(trimmed)) {
    const opened = openSealed(trimmed);
    if (!opened.ok) return opened;
    trimmed = opened.text.trim();
  }
  const types = key.types;
  if (trimmed === "") return { ok: false, reason: `has no value (write "" for an empty string)` };
  const acceptsString = types === null || types.has("string");
  if (types !== null && types.size === 1 && acceptsString) return checked(stringValue(trimmed));

  let value: unknown;
  try {
    value = JSON.parse(trimmed);
  } catch {
    if (acceptsString) return { ok: true, value: trimmed };
    return { ok: false, reason: `must be ${typeNames(types)}, ${got(key, trimmed)} (not JSON)` };
  }
  if (types === null || types.has(jsonTypeOf(value))) {
    return nestsDeeperThan(value, MAX_DEPTH) ? { ok: false, reason: `is nested deeper than ${MAX_DEPTH} levels` } : checked(value);
  }
  if (acceptsString) return { ok: true, value: trimmed };
  return { ok: false, reason: `must be ${typeNames(types)}, ${got(key, trimmed)}` };
}

// the text as written (not JSON of it: `got "1500"`, not `got "\"1500\""`)
const got = (key: KeyInfo, trimmed: string) =>
  key.secret ? "(value hidden: secret key)" : `got ${trimmed.length > 60 ? `${trimmed.slice(0, 60)}…` : trimmed}`;

/**
 * A value the journal can hold exactly: JSON would turn a lone surrogate into U+FFFD, a number
 * past ±(2^53−1) into its neighbour and 1e400 into null, so they are refused, not changed.
 */
function checked(value: unknown): Decoded {
  if (value === null || typeof value !== "object") {
    const problem = unrepresentable(value); // most values: no walk (a burst decodes one per line)
    return problem ? { ok: false, reason: problem } : { ok: true, value };
  }
  let level: unknown[] = [value];
  while (level.length > 0) {
    const next: unknown[] = [];
    for (const node of level) {
      const problem = unrepresentable(node);
      if (problem) return { ok: false, reason: problem };
      if (node !== null && typeof node === "object") {
        for (const [key, child] of Object.entries(node)) {
          if (LONE_SURROGATE.test(key)) return { ok: false, reason: `holds a name that is not valid Unicode (a lone surrogate such as \\ud800)` };
          next.push(child);
        }
      }
    }
    level = next;
  }
  return { ok: true, value };
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function unrepresentable(value: unknown): string | undefined {
  if (typeof value === "string" && LONE_SURROGATE.test(value)) return "holds a string that is not valid Unicode (a lone surrogate such as \\ud800)";
  if (typeof value !== "number") return undefined;
  if (!Number.isFinite(value)) return "holds a number too large to represent (it would become null)";
  if (Number.isInteger(value) && !Number.isSafeInteger(value))
    return `holds a whole number beyond ±${Number.MAX_SAFE_INTEGER}, which cannot be kept exactly (write it as a string)`;
  return undefined;
}

function stringValue(text: string): string {
  if (text.length >= 2 && text.startsWith('"') && text.endsWith('"')) {
    try {
      const value: unknown = JSON.parse(text);
      if (typeof value === "string") return value;
    } catch {
      // not a JSON string after all: the text is the value
    }
  }
  return text;
}

const NAMES: Record<string, string> = {
  integer: "an integer",
  number: "a number",
  boolean: "true or false",
  null: "null",
  array: "a JSON array",
  object: "a JSON object",
  string: "a string",
};

function typeNames(types: ReadonlySet<string> | null): string {
  const list = [...(types ?? [])].filter((type) => !(type === "integer" && types!.has("number")));
  return list.map((type) => NAMES[type] ?? type).join(" or ");
}

function known(schemas: Schemas): string {
  return schemas.size > 0 ? ` (known apps: ${[...schemas.keys()].slice(0, 12).join(", ")})` : " (no schemas are loaded)";
}

const refuse = (reason: string): Verdict => ({ ok: false, reason });

/** What becomes of one inbox line. */
export type Outcome = { kind: "ignore" } | { kind: "reject"; reason: string } | { kind: "accept"; change: ValidChange };

/** Decide one line's fate: ignored (blank, comment), rejected with a reason, or accepted. */
export function judgeLine(line: InboxLine, context: ValidationContext & { maxLineBytes: number }, log?: Logger): Outcome {
  if (line.tooLong !== undefined) return reject(`line is ${line.tooLong} bytes, over the limit of ${context.maxLineBytes}`);
  if (line.notUtf8) return reject("line is not valid UTF-8");
  if (line.unterminated) return reject("the inbox was replaced before this line's newline arrived");
  if (line.cutShort)
    return reject("this line never got its newline: another writer (cdp push or the sidecar) appended after it, so it was cut short and is not applied");
  const parsed = parseLine(line.text);
  if (parsed.kind === "blank" || parsed.kind === "comment") return { kind: "ignore" };
  if (parsed.kind === "error") return reject(parsed.message);
  try {
    const verdict = validateChange(context, parsed);
    return verdict.ok ? { kind: "accept", change: verdict.change } : reject(verdict.reason);
  } catch (error) {
    log?.error({ err: error, line: line.number }, "validating a line failed");
    return reject(`could not be validated: ${(error as Error).message}`);
  }
}

/** Judge each line of `text` as the watcher would, each against the state the accepted lines before it leave. */
export function* judgeInSequence(
  text: Buffer,
  schemas: Schemas,
  apps: ReadonlyMap<string, AppConfig>,
  maxLineBytes: number,
  validators = new Map<string, AppValidator[]>(),
) {
  const current = new PendingConfigs(configsOf(apps));
  const context = { schemas, validators, current, maxLineBytes };
  for (const line of linesOf(text, maxLineBytes)) {
    const outcome = judgeLine(line, context);
    if (outcome.kind === "accept") current.set(outcome.change.app, outcome.change.path[0]!, outcome.change.topValue);
    yield { line, outcome };
  }
}

const reject = (reason: string): Outcome => ({ kind: "reject", reason });
