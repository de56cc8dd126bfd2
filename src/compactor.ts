// Compaction's schedule: count the change records the journal holds since it was last compacted,
// and rewrite it (journal.ts's compactJournal) once they reach the threshold, between batches (in
// a fleet: between journal appends), so that the journal is whole. Then appends go to the new file.
import { open, rename, rm } from "node:fs/promises";
import { dirname } from "node:path";
import { isDeepStrictEqual } from "node:util";
import type { Logger } from "pino";
import type { Files } from "./commit.js";
import { DurableFile, StorageFault, syncDirectory, takeDirectoryOwner } from "./durable.js";
import { replayJournal, type JournalState } from "./journal.js";
import { CdpError } from "./errors.js";
import { encodeChange, markerRecord, positionRecord, schemaRecord } from "./records.js";
import { INBOX_FILE } from "./inbox.js";
import type { KeyInfo, Schemas } from "./schemas.js";
import type { ConfigTable } from "./table.js";
import type { AppValidator } from "./validate.js";
import { setIn, type AppConfig } from "./values.js";

export interface CompactionSettings {
  /** Compact once the journal holds this many change records (0: never)… */
  after: number;
  /** …keeping the last this many as history. */
  keep: number;
  journalPath: string;
  files: Files;
  schemas: () => Schemas;
  validators: ReadonlyMap<string, readonly AppValidator[]>;
  table: ConfigTable;
  log: Logger;
}

export class Compactor {
  #settings: CompactionSettings;
  #records: number;

  constructor(settings: CompactionSettings, records: number) {
    this.#settings = settings;
    this.#records = records;
  }

  /** `count` change records were appended. */
  counted(count: number): void {
    this.#records += count;
  }

  /** Count from zero (a fleet host does so when it queues a compaction behind journal appends). */
  restart(): void {
    this.#records = 0;
  }

  get due(): boolean {
    return this.#settings.after > 0 && this.#records >= this.#settings.after;
  }

  /**
   * Rewrite the journal. A failure leaves it as it was and is tried again after as many changes
   * again; failing to reopen the new file is a StorageFault (appending to the old one would lose
   * changes), which stops cdp.
   */
  async compact(): Promise<void> {
    const { journalPath, files, keep, log, table } = this.#settings;
    try {
      const schemas = this.#settings.schemas();
      const full = await replayJournal(journalPath, schemas, { validators: this.#settings.validators, history: true });
      const { before, after } = await compactJournal(journalPath, full, schemas, keep);
      try {
        await files.journal.close();
        files.journal = await DurableFile.open(journalPath);
      } catch (error) {
        throw new StorageFault(journalPath, "reopening the compacted journal", error as NodeJS.ErrnoException);
      }
      this.#records = Math.min(this.#records, keep);
      log.info({ before, after, revision: table.revision }, "compacted the journal");
    } catch (error) {
      if (error instanceof StorageFault) throw error;
      this.#records = 0; // try again after as many changes again
      log.error({ err: error }, "compaction failed; the journal is left as it was");
    }
  }
}

/**
 * Rewrite the journal as the state before its last `keep` changes plus those changes, and a
 * marker with the inbox position: replaying it gives the same table, revision and position.
 * Crash-safe: a temporary file is written and fsync'd, renamed over the journal, and the directory
 * fsync'd, so a crash leaves either the old journal or the new one. `state` must hold the history.
 */
export async function compactJournal(path: string, state: JournalState, schemas: Schemas, keep: number): Promise<{ before: number; after: number }> {
  for (const [app, schema] of schemas) {
    const installed = state.versions.get(app);
    if (installed && installed.version !== schema.version) {
      const fix = installed.vetoed ? `moving to version ${schema.version} was vetoed: put the file of version ${installed.version} back, then compact` : "start cdp watch once to migrate, then compact";
      throw new CdpError("usage", `${app}'s schema file is version ${schema.version} but the journal is at version ${installed.version}: ${fix}`);
    }
  }
  let kept = keep > 0 ? state.history.slice(-keep) : [];
  // the state before a migration has another shape: what is kept starts after the last one
  const after = kept.map((entry) => entry.migration !== undefined).lastIndexOf(true) + 1;
  kept = kept.slice(after);
  const baseRevision = kept[0] ? kept[0].revision - 1 : state.revision;
  const base = new Map(state.apps);
  for (const entry of kept.slice().reverse()) if (!entry.step) base.set(entry.app, setIn(base.get(entry.app)!, entry.key.split("."), entry.previous));

  const time = new Date().toISOString();
  // the versions in force and every step known come first: the way back outlives compaction
  const entries = Object.fromEntries([...state.versions].map(([app, { version, source, steps, vetoed }]) => [app, { version, schema: source, steps: Object.fromEntries(steps), ...(vetoed ? { vetoed } : {}) }]));
  let text = state.versions.size > 0 ? schemaRecord({ seq: state.seq, time, source: "compaction" }, undefined, entries) : "";
  text += `# base rev=${baseRevision} seq=${state.seq} time=${time} source=compaction (the state at revision ${baseRevision})\n`;
  for (const line of stateLines(base, schemas)) text += `${line}\n`;
  for (const entry of kept) text += entry.record;
  // revisions with no change here (a fleet's rollout steps elsewhere) after the last change kept
  const lastKept = kept.at(-1)?.revision ?? baseRevision;
  if (state.revision > lastKept) text += markerRecord({ seq: state.seq, time, source: "compaction", marker: "compaction" }, state.revision);
  if (state.position) text += positionRecord({ seq: state.seq, time, source: `${INBOX_FILE}:${state.position.line}`, position: state.position });

  const temporary = `${path}.compacting`;
  const file = await open(temporary, "w", 0o600);
  try {
    await takeDirectoryOwner(file, dirname(path)); // root's cdp compact of a service user's journal
    await file.writeFile(text);
    await file.sync();
  } finally {
    await file.close();
  }
  const check = await replayJournal(temporary, schemas);
  const same = check.revision === state.revision && check.seq === state.seq && isDeepStrictEqual(check.position, state.position);
  if (!same || !isDeepStrictEqual(check.apps, state.apps)) {
    await rm(temporary, { force: true });
    throw new Error(`compaction of ${path} would change the configuration; the journal is left as it was`);
  }
  await rename(temporary, path);
  await syncDirectory(dirname(path));
  return { before: state.length, after: Buffer.byteLength(text) };
}

/** A configuration as change lines: one per top-level key whose value is not its schema default. */
export function stateLines(apps: ReadonlyMap<string, AppConfig>, schemas: Schemas): string[] {
  const lines: string[] = [];
  for (const [app, config] of apps) {
    const schema = schemas.get(app);
    if (!schema) continue;
    for (const [key, value] of Object.entries(JSON.parse(JSON.stringify(config)) as Record<string, unknown>)) {
      if (!isDeepStrictEqual(value, schema.defaults[key])) lines.push(encodeChange(app, key, value, schema.key([key]) as KeyInfo));
    }
  }
  return lines;
}
