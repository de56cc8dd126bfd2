// Live schema upgrades (the appup of cdp): notice changed schema files, decide whether the
// configuration holds under them, and take them between batches.
import { stat } from "node:fs/promises";
import { join } from "node:path";
import { isDeepStrictEqual } from "node:util";
import { watch } from "chokidar";
import type { Logger } from "pino";
import type { Files } from "../store/durable.js";
import { CdpError } from "../errors.js";
import type { HeldWrites } from "../store/held.js";
import { fingerprintOf, migrateChecked } from "../store/installed.js";
import { replayJournal, schemaRecord, upgradeRecord, type SchemaEntries } from "../store/journal.js";
import { rejectionRecord } from "../store/rejects.js";
import { compileSchemas, readSchemaTexts, type SchemaTexts, type Schemas } from "../schemas/schemas.js";
import type { ConfigTable } from "../store/table.js";
import type { AppValidator } from "../schemas/validate.js";
import { migrateState, unexpectedVersion, type Upgrade } from "./versions.js";

/** The names of the files that differ between two readings. */
export function changedFiles(before: SchemaTexts, after: SchemaTexts): string[] {
  const names = new Set([...before.keys(), ...after.keys()]);
  return [...names].filter((name) => before.get(name) !== after.get(name)).sort();
}

/**
 * Compile the new schemas and replay the journal under them, then migrate each app whose version
 * changes: the configuration as it would be, or why the new schemas cannot be taken (they do not
 * compile, a step is missing or fails, or the configuration breaks them, a removed app's
 * configured values included).
 */
export async function planUpgrade(
  schemaDir: string,
  texts: SchemaTexts,
  journalPath: string,
  validators: ReadonlyMap<string, readonly AppValidator[]>,
  inForce?: Schemas,
): Promise<Upgrade> {
  try {
    const schemas = compileSchemas(schemaDir, texts);
    return migrateState(await replayJournal(journalPath, schemas, { validators, inForce }), schemas, validators, inForce);
  } catch (error) {
    if (error instanceof CdpError) return { ok: false, reason: error.message };
    throw error;
  }
}

/** How long a refused schema file must stay unchanged before the refusal is recorded. */
const SETTLE_MS = 1000;

/** Whether any of the files was modified within the last `ms` (a copy may be under way). */
async function writtenWithin(dir: string, names: string[], ms: number): Promise<boolean> {
  const times = await Promise.all(
    names.map((name) =>
      stat(join(dir, name)).then(
        (info) => info.mtimeMs,
        () => 0,
      ),
    ),
  );
  return times.some((time) => Date.now() - time < ms);
}

/** Call `hint` when the schema directory may have changed: on file events and every `pollMs`. */
export function watchSchemaDir(dir: string, pollMs: number, log: Logger, hint: () => void): () => Promise<void> {
  const watcher = watch(dir, { depth: 0, ignoreInitial: true });
  watcher.on("all", hint);
  watcher.on("raw", hint);
  watcher.on("error", (error) => log.error({ err: error }, "watching the schema directory failed; the periodic check goes on"));
  const timer = setInterval(hint, pollMs);
  return async () => {
    clearInterval(timer);
    await watcher.close();
  };
}

export interface LiveSchemaSettings {
  dir: string;
  journalPath: string;
  validators: ReadonlyMap<string, readonly AppValidator[]>;
  /** The versions the embedding code expects: schemas of another are refused. */
  expect: Readonly<Record<string, number>>;
  /** A migration is tentative: the veto that subscribers hear, running `undo` in its turn. */
  tentative: (undo: (reason: string) => Promise<void>) => (reason: string) => boolean;
  table: ConfigTable;
  files: Files;
  writes: HeldWrites;
  /** The count of processed lines, for the records written. */
  seq: () => number;
  log: Logger;
}

/**
 * The schemas in force, and taking new ones while cdp runs: if the configuration holds under
 * them they are in force at once (a revision of their own when effective values change);
 * otherwise the old ones stay, and the refusal is recorded in cdp.rej (once per new reading).
 */
export class LiveSchemas {
  schemas: Schemas;
  #texts: SchemaTexts;
  #refused: SchemaTexts | undefined;
  #settings: LiveSchemaSettings;

  constructor(schemas: Schemas, texts: SchemaTexts, settings: LiveSchemaSettings) {
    this.schemas = schemas;
    this.#texts = texts;
    this.#settings = settings;
  }

  /** Watch the schema directory; a change is taken in a turn of its own (one queued at a time). Returns how to stop. */
  watch(
    pollMs: number,
    run: { inTurn: (task: () => Promise<void>) => Promise<void>; stopping: () => boolean; fault: (error: unknown) => void },
  ): () => Promise<void> {
    let queued = false;
    return watchSchemaDir(this.#settings.dir, pollMs, this.#settings.log.child({ stage: "upgrade" }), () => {
      if (queued || run.stopping()) return;
      queued = true;
      run
        .inTurn(async () => {
          queued = false;
          await this.upgrade();
        })
        .catch(run.fault);
    });
  }

  /** Read the schema directory again and take what changed, if the configuration holds under it. */
  async upgrade(): Promise<void> {
    const { dir, journalPath, validators, table, files, writes, log } = this.#settings;
    const texts = await readSchemaTexts(dir).catch(() => this.#texts);
    const changed = changedFiles(this.#texts, texts);
    if (changed.length === 0 || (this.#refused && changedFiles(this.#refused, texts).length === 0)) return;
    const planned = await planUpgrade(dir, texts, journalPath, validators, this.schemas);
    const unexpected = planned.ok ? unexpectedVersion(planned.schemas, this.#settings.expect) : undefined;
    const plan: Upgrade = unexpected ? { ok: false, reason: unexpected } : planned;
    const time = new Date().toISOString();
    const seq = this.#settings.seq();
    if (!plan.ok) {
      // a file written moments ago may still be being copied (cp truncates, then writes): judged again at the next look
      if (await writtenWithin(dir, changed, SETTLE_MS))
        return log.debug({ files: changed, reason: plan.reason }, "a schema file was written moments ago: judged again at the next look");
      this.#refused = texts;
      log.warn({ files: changed, reason: plan.reason }, "schema change refused: the schemas in force stay");
      const text = changed.map((file) => join(dir, file)).join(" ");
      await writes.append(files.rejects, rejectionRecord({ seq, time, source: "schemas", reason: `schema change refused: ${plan.reason}`, text }));
      return;
    }
    const differs = [...new Set([...plan.apps.keys(), ...this.schemas.keys()])].some((app) => !isDeepStrictEqual(plan.apps.get(app), table.get(app)));
    const source = `schema:${changed.join(",")}`;
    const record =
      Object.keys(plan.entries).length > 0
        ? schemaRecord({ seq, time, source }, differs ? table.revision + 1 : undefined, plan.entries)
        : differs
          ? upgradeRecord(seq, time, table.revision + 1, changed)
          : "";
    if (record && !(await writes.append(files.journal, record))) return;
    const before = this.schemas;
    this.schemas = plan.schemas;
    this.#texts = texts;
    this.#refused = undefined;
    const revision = table.revision + 1;
    const veto = plan.migrated.length > 0 ? this.#settings.tentative((reason) => this.#vetoed(plan, revision, before, reason)) : undefined;
    if (differs) table.applyAll(plan.apps, revision, source, time, veto ? { veto } : {});
    const migrated = plan.migrated.map(({ app, from, to }) => `${app} ${from} → ${to}`);
    log.info(
      { files: changed, apps: [...this.schemas.keys()], revision: table.revision, ...(migrated.length > 0 ? { migrated } : {}) },
      migrated.length > 0 ? "schemas upgraded, apps migrated" : "schemas upgraded",
    );
  }

  /**
   * A subscriber vetoed a migration within the window: the migrated apps go back down to the
   * versions before (their steps checked as any migration), journaled with the reason, and the
   * vetoed file is not taken again until it changes (at a restart either).
   */
  async #vetoed(plan: Extract<Upgrade, { ok: true }>, revision: number, before: Schemas, reason: string): Promise<void> {
    const { table, files, writes, log } = this.#settings;
    const fields = { revision, reason };
    if (this.schemas !== plan.schemas) return log.warn(fields, "veto of a migration not applied: the schemas changed since");
    const schemas = new Map(this.schemas);
    const apps = new Map([...schemas.keys()].map((app) => [app, table.config(app)]));
    const entries: SchemaEntries = {};
    for (const { app, from, to } of plan.migrated) {
      const old = before.get(app)!;
      const steps = new Map([...old.steps, ...Object.entries(plan.entries[app]?.steps ?? {}).map(([version, step]) => [Number(version), step] as const)]);
      try {
        apps.set(app, migrateChecked(app, apps.get(app)!, to, old, steps));
      } catch (error) {
        return log.warn({ ...fields, refused: (error as Error).message }, "veto of a migration not applied: going back would be refused");
      }
      schemas.set(app, old);
      const vetoed = { version: to, schema: fingerprintOf(plan.schemas.get(app)!.source) };
      entries[app] = { version: from, from: to, schema: old.source, steps: Object.fromEntries(steps), vetoed };
    }
    const time = new Date().toISOString();
    const back = table.revision + 1;
    if (!(await writes.append(files.journal, schemaRecord({ seq: this.#settings.seq(), time, source: `veto:${revision}`, reason }, back, entries)))) return;
    this.schemas = schemas;
    this.#refused = this.#texts; // the vetoed files stay refused until they change
    table.applyAll(apps, back, `veto:${revision}`, time, { reason });
    log.warn({ ...fields, back: plan.migrated.map(({ app, from, to }) => `${app} ${to} → ${from}`) }, "migration vetoed and reverted");
  }
}
