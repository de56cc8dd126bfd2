// Taking the schema files' versions: each app whose file declares another version than the one
// in force is moved through its steps and checked (all or nothing), at start and live; a fleet
// host holds the recorded versions until the fleet moves, by a revision of its own (fleet/versions.ts).
import { isDeepStrictEqual } from "node:util";
import type { Logger } from "pino";
import type { DurableFile } from "../store/durable.js";
import { CdpError } from "../errors.js";
import { fingerprintOf, migrateChecked, type InstalledVersion, type Migrated } from "../store/installed.js";
import { schemaRecord, type JournalState, type SchemaEntries } from "../store/journal.js";
import { VERSION_KEYWORD } from "../schemas/migrations.js";
import { compileAppSchema, SCHEMA_SUFFIX, type AppSchema, type Schemas, type SchemaTexts } from "../schemas/schemas.js";
import type { AppValidator } from "../schemas/validate.js";
import type { AppConfig } from "../lines/values.js";

/** schemas: those in force once taken (an app whose new file was vetoed stays at its recorded version: `kept`). */
export type Upgrade =
  | { ok: true; schemas: Schemas; apps: Map<string, AppConfig>; entries: SchemaEntries; migrated: Migrated[]; kept: Migrated[] }
  | { ok: false; reason: string };

/**
 * The replayed configuration taken to the schemas' versions: each app whose recorded version
 * differs is migrated, all or nothing, then checked whole (schema and validators) — or, with
 * `hold` (a fleet host), kept at the recorded version. The entries say what the journal must
 * record: apps migrated, and schemas it has not recorded yet.
 */
export function migrateState(
  state: JournalState,
  schemas: Schemas,
  validators: ReadonlyMap<string, readonly AppValidator[]>,
  inForce?: Schemas,
  options: { hold?: boolean } = {},
): Upgrade {
  const apps = new Map(state.apps);
  const entries: SchemaEntries = {};
  const migrated: Migrated[] = [];
  const kept: Migrated[] = [];
  const taken = new Map(schemas);
  for (const [app, schema] of schemas) {
    const recorded = state.versions.get(app);
    const held = inForce?.get(app);
    // no record: the journal's lines were read with the schema in force (see replayJournal's inForce)
    const installed = recorded ?? (held && held.version !== schema.version ? { version: held.version, source: held.source, steps: held.steps } : undefined);
    const vetoed = installed?.vetoed && installed.vetoed.version === schema.version && installed.vetoed.schema === fingerprintOf(schema.source);
    if (installed && installed.version !== schema.version && (vetoed || options.hold)) {
      // a subscriber vetoed moving to exactly this file (the recorded version stays until the file
      // changes), or a fleet host: the fleet moves to a version by a revision of its own
      taken.set(app, compileAppSchema(app, `the journal's record of ${app} version ${installed.version}`, installed.source));
      kept.push({ app, from: installed.version, to: schema.version });
    } else if (installed && installed.version !== schema.version) {
      const steps = new Map([...installed.steps, ...schema.steps]); // the file's steps, and the recorded ones it no longer holds
      try {
        apps.set(app, migrateChecked(app, apps.get(app)!, installed.version, schema, steps, validators.get(app) ?? []));
      } catch (error) {
        return { ok: false, reason: (error as Error).message };
      }
      migrated.push({ app, from: installed.version, to: schema.version });
      const before = recorded ? {} : { fromSchema: installed.source };
      entries[app] = { version: schema.version, from: installed.version, ...before, schema: schema.source, steps: Object.fromEntries(steps) };
    } else if (isVersioned(schema, recorded) && !isDeepStrictEqual(recorded?.source, schema.source)) {
      entries[app] = { version: schema.version, schema: schema.source };
    }
  }
  return { ok: true, schemas: taken, apps, entries, migrated, kept };
}

/**
 * Take the schema files at start: apps whose version changed are migrated (all or nothing; a
 * refusal keeps cdp from starting), and the schemas not yet recorded are written to the journal.
 */
export async function takeSchemasAtStart(
  state: JournalState,
  schemas: Schemas,
  texts: SchemaTexts,
  journal: DurableFile,
  options: { schemas: string; validators: ReadonlyMap<string, readonly AppValidator[]>; fleet?: { downgrade?: boolean }; log: Logger },
): Promise<{ state: JournalState; inForce: Schemas }> {
  // a fleet host migrates by fleet revisions (once it has caught up): here it only records
  const plan = migrateState(state, schemas, options.validators, undefined, { hold: options.fleet !== undefined });
  if (!plan.ok) throw new CdpError("bootstrap", `the schemas in ${options.schemas} cannot be taken: ${plan.reason}`);
  for (const { app, from, to } of plan.kept) {
    const why = !options.fleet
      ? `moving to version ${to} was vetoed, and its file has not changed since`
      : to > from || options.fleet.downgrade
        ? `the fleet moves it to version ${to} once this host has caught up${to > from ? "" : " (--fleet-downgrade)"}`
        : `its file is version ${to}, and a host moves the fleet down only with --fleet-downgrade`;
    options.log.warn({ app, version: from, file: to }, `${app} stays at schema version ${from}: ${why}`);
  }
  const apps = Object.keys(plan.entries);
  if (apps.length === 0) return { state, inForce: plan.schemas };
  const differs = plan.migrated.length > 0;
  const files = [...texts.keys()].filter((name) => apps.includes(name.slice(0, -SCHEMA_SUFFIX.length)));
  const revision = differs ? state.revision + 1 : undefined;
  await journal.appendDurably(schemaRecord({ seq: state.seq, time: new Date().toISOString(), source: `schema:${files.join(",")}` }, revision, plan.entries));
  for (const { app, from, to } of plan.migrated) options.log.info({ app, from, to, revision }, `migrated ${app} from schema version ${from} to ${to}`);
  return { state: { ...state, apps: plan.apps, revision: revision ?? state.revision }, inForce: plan.schemas };
}

/** Why the schemas' versions are not those the embedding code expects, or undefined. */
export function unexpectedVersion(schemas: Schemas, expect: Readonly<Record<string, number>>): string | undefined {
  for (const [app, version] of Object.entries(expect)) {
    const schema = schemas.get(app);
    if (!schema) return `this code expects the app "${app}" (schema version ${version}), but no ${app}.schema.json is there`;
    if (schema.version !== version) return `this code expects ${app} at schema version ${version}, but ${schema.file} is version ${schema.version}`;
  }
  return undefined;
}

/**
 * Only the schemas of apps that use versions are recorded: a schema that declares
 * `x-cdp-version`, or one the journal already records. Others leave the journal as it was.
 */
function isVersioned(schema: AppSchema, recorded: InstalledVersion | undefined): boolean {
  return recorded !== undefined || VERSION_KEYWORD in schema.source;
}
