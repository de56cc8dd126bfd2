// The schema versions the journal records, as OTP keeps its installed releases: while the journal
// is replayed, each app's lines are read with the schema of the version they were written under,
// and each recorded migration is applied where it happened. The schema files give the version in
// force now; a version they no longer describe is read from the journal's own record of it.
import { createHash } from "node:crypto";
import { open } from "node:fs/promises";
import type { AnySchemaObject } from "ajv";
import { describeSchemaError, compileAppSchema, type AppSchema, type Schemas } from "../schemas/schemas.js";
import { migrateConfig, movesBetween, type Step } from "../schemas/migrations.js";
import { readSchemaRecord, type SchemaEntries, type SchemaEntry } from "./records.js";
import { runValidators, type AppValidator } from "../schemas/validate.js";
import type { AppConfig } from "../lines/values.js";

/** An app's version at the end of the journal, as recorded, and every step the journal knows for it. */
export interface InstalledVersion {
  version: number;
  source: AnySchemaObject;
  steps: ReadonlyMap<number, Step>;
  /** The schema a subscriber vetoed moving to (see SchemaEntry). */
  vetoed?: { version: number; schema: string };
}

/** What a schema record did to one app, for history. */
export interface Migrated {
  app: string;
  from: number;
  to: number;
}

export class InstalledSchemas {
  /** Per app: the schema its next lines are read with. */
  readonly #reading = new Map<string, AppSchema>();
  readonly #files: Schemas;
  readonly versions = new Map<string, InstalledVersion>();

  /** The schemas the journal's first lines were written under: each app's first record says which. */
  static async read(path: string, files: Schemas, inForce?: Schemas): Promise<InstalledSchemas> {
    return new InstalledSchemas(files, await firstEntries(path), inForce);
  }

  /** `inForce`: the schemas a running cdp holds, for apps the journal has no record of (a live upgrade). */
  private constructor(files: Schemas, first: Map<string, SchemaEntry>, inForce: Schemas | undefined) {
    this.#files = files;
    for (const [app, file] of files) {
      const entry = first.get(app);
      if (!entry) {
        const held = inForce?.get(app);
        this.#reading.set(app, held && held.version !== file.version ? held : file);
        continue;
      }
      const version = entry.from ?? entry.version;
      const recorded = version === file.version ? undefined : entry.from === undefined ? entry.schema : entry.fromSchema;
      this.#reading.set(app, recorded ? compileAppSchema(app, `the journal's record of ${app} version ${version}`, recorded) : file);
    }
  }

  /** The schema `app`'s lines are read with at this point of the journal. */
  schemaOf(app: string): AppSchema | undefined {
    return this.#reading.get(app);
  }

  /** Whether `app` is read with its schema file (its code-level validators apply), not a recorded version. */
  isCurrent(app: string): boolean {
    return this.#reading.get(app) === this.#files.get(app);
  }

  /**
   * A schema record: each app it names is migrated (its config patched and checked) when its
   * version changes, and read with that version's schema from here on. Throws the reason.
   */
  take(entries: SchemaEntries, apps: Map<string, AppConfig>): Migrated[] {
    const migrated: Migrated[] = [];
    for (const [app, entry] of Object.entries(entries)) {
      const file = this.#files.get(app);
      const reading = this.#reading.get(app);
      if (!file || !reading) continue; // a removed app: its lines, if any, say so
      const steps = new Map(this.versions.get(app)?.steps);
      for (const [version, step] of [...compileSteps(entry.schema), ...Object.entries(entry.steps ?? {})]) steps.set(Number(version), step);
      const schema = entry.version === file.version ? file : compileAppSchema(app, `the journal's record of ${app} version ${entry.version}`, entry.schema);
      if (entry.version !== reading.version) {
        apps.set(app, migrateChecked(app, apps.get(app)!, reading.version, schema, steps));
        migrated.push({ app, from: reading.version, to: entry.version });
      }
      this.#reading.set(app, schema);
      this.versions.set(app, { version: entry.version, source: entry.schema, steps, ...(entry.vetoed ? { vetoed: entry.vetoed } : {}) });
    }
    return migrated;
  }
}

/**
 * A config moved from version `from` to `schema`'s, and checked (defaults filled in) — with
 * `validators`, by the app's code too (replay leaves them out: the code checks its own version);
 * throws the reason.
 */
export function migrateChecked(
  app: string,
  config: AppConfig,
  from: number,
  schema: AppSchema,
  steps: ReadonlyMap<number, Step>,
  validators?: readonly AppValidator[],
): AppConfig {
  const moves = movesBetween(app, from, schema.version, steps);
  if (typeof moves === "string") throw new Error(moves);
  const result = migrateConfig(app, config, moves);
  if (!result.ok) throw new Error(result.reason);
  if (!schema.validate(result.config)) {
    const error = schema.validate.errors![0]!;
    const to = schema.version;
    const taken = Array.from({ length: Math.abs(to - from) }, (_, i) => `"${to > from ? from + i + 1 : from - i}"`).join(", ");
    const stray = error.keyword === "additionalProperties" ? ` (version ${to} has no such key: a step must move or remove it)` : "";
    throw new Error(
      `${app} ${from} → ${to}: after step${to - from === 1 || from - to === 1 ? "" : "s"} ${taken} (${to > from ? "up" : "down"}), the config does not hold: ${describeSchemaError(schema, error, result.config)}${stray}`,
    );
  }
  const refusal = validators && runValidators(schema, validators, result.config);
  if (refusal) throw new Error(`${app} ${from} → ${schema.version}: ${refusal}`);
  return result.config;
}

/** A schema's fingerprint, for "the file is still the one that was vetoed". */
export function fingerprintOf(schema: AnySchemaObject): string {
  return createHash("sha256").update(JSON.stringify(schema)).digest("hex").slice(0, 16);
}

function compileSteps(schema: AnySchemaObject): [string, Step][] {
  const declared = schema["x-cdp-migrations"];
  return typeof declared === "object" && declared !== null ? (Object.entries(declared) as [string, Step][]) : [];
}

/**
 * Each app's first schema record, found before the replay (its lines come before it only in a
 * journal written before cdp recorded schemas). A byte search: records are rare, lines many.
 */
async function firstEntries(path: string): Promise<Map<string, SchemaEntry>> {
  const first = new Map<string, SchemaEntry>();
  const needle = Buffer.from(" schemas: {");
  const file = await open(path, "r").catch(() => undefined);
  if (!file) return first;
  try {
    // one buffer for the whole pass, the unfinished last line moved to its start: replay keeps its memory for the table
    let buffer = Buffer.allocUnsafe(1 << 20);
    let kept = 0;
    let position = 0;
    for (;;) {
      if (kept === buffer.length) buffer = Buffer.concat([buffer, Buffer.allocUnsafe(buffer.length)]); // a line longer than the buffer
      const { bytesRead } = await file.read(buffer, kept, buffer.length - kept, position);
      if (bytesRead === 0) break;
      position += bytesRead;
      const data = buffer.subarray(0, kept + bytesRead);
      const complete = data.lastIndexOf(10) + 1; // only whole lines: a record may straddle two reads
      for (let at = data.indexOf(needle); at !== -1 && at < complete; at = data.indexOf(needle, at + 1)) {
        const start = data.lastIndexOf(10, at) + 1;
        const end = data.indexOf(10, at);
        const record = data[start] === 35 ? readSchemaRecord(data.toString("utf8", start, end)) : undefined;
        for (const [app, entry] of Object.entries(record?.entries ?? {})) if (!first.has(app)) first.set(app, entry);
        at = end;
      }
      kept = data.length - complete;
      buffer.copy(buffer, 0, complete, data.length);
    }
  } finally {
    await file.close();
  }
  return first;
}
