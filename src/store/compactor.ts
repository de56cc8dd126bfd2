// Compaction's schedule: count the change records the journal holds since it was last compacted,
// and rewrite it (journal.ts's compactJournal) once they reach the threshold, between batches (in
// a fleet: between journal appends), so that the journal is whole. Then appends go to the new file.
import { createHash } from "node:crypto";
import { open, rename, rm } from "node:fs/promises";
import { setImmediate as nextTurn } from "node:timers/promises";
import { dirname } from "node:path";
import { isDeepStrictEqual } from "node:util";
import type { Logger } from "pino";
import type { Files } from "./durable.js";
import { DurableFile, StorageFault, syncDirectory, takeDirectoryOwner } from "./durable.js";
import { replayJournal, type HistoryEntry, type JournalState, type ReplayOptions } from "./journal.js";
import { CdpError } from "../errors.js";
import type { SecretsKey } from "../lines/sealed.js";
import { baseRecord, encodeChange, handWrittenRecord, markerRecord, positionRecord, scheduleRecord, schemaRecord } from "./records.js";
import { INBOX_FILE } from "../inbox/inbox.js";
import type { KeyInfo, Schemas } from "../schemas/schemas.js";
import type { ConfigTable } from "./table.js";
import { setInPlace, type AppConfig } from "../lines/values.js";

export interface CompactionSettings {
  /** Compact once the journal holds this many change records (0: never)… */
  after: number;
  /** …keeping the last this many as history. */
  keep: number;
  journalPath: string;
  files: Files;
  schemas: () => Schemas;
  table: ConfigTable;
  /** Whether cdp is stopping (a compaction then ends without swapping the files). */
  stopping: () => boolean;
  /** A fault that must stop cdp (the compacted journal could not be reopened). */
  fault: (error: unknown) => void;
  /** The base block's secret values are sealed with it. */
  sealing: SecretsKey | undefined;
  log: Logger;
}

/** Run a task when no journal append is under way (between batches, or between a fleet host's appends). */
export type JournalTurn = <T>(task: () => Promise<T>) => Promise<T>;

export class Compactor {
  #settings: CompactionSettings;
  #records: number;
  #running: Promise<void> | undefined;

  constructor(settings: CompactionSettings, records: number) {
    this.#settings = settings;
    this.#records = records;
  }

  /** `count` change records were appended. */
  counted(count: number): void {
    this.#records += count;
  }

  get due(): boolean {
    return this.#settings.after > 0 && this.#records >= this.#settings.after && !this.#running;
  }

  /** Settles when the compaction under way (if any) has ended. */
  settled(): Promise<void> {
    return this.#running ?? Promise.resolve();
  }

  /**
   * Rewrite the journal beside the pipeline: the journal as it is at the next turn is read and
   * rewritten to a temporary file while batches go on appending; then, in a turn of its own, what
   * they appended meanwhile is copied over and the files are swapped. A failure leaves the journal
   * as it was and is tried again after as many changes again; failing to reopen the new file is a
   * StorageFault (appending to the old one would lose changes), which stops cdp.
   */
  compact(turn: JournalTurn): void {
    if (this.#running) return;
    const { journalPath, files, keep, log, table, stopping } = this.#settings;
    const counted = this.#records;
    this.#running = (async () => {
      const upTo = await turn(async () => files.journal.size);
      // the replay reads in small chunks, and the rewrite gives way every few thousand keys: between two, the batches' turns come
      const written = await compactJournal(journalPath, this.#settings.schemas(), keep, { upTo, sealing: this.#settings.sealing, judged: true });
      const swapped = await turn(async () => {
        if (stopping()) return false;
        await appendRange(journalPath, upTo, files.journal.size, written.temporary);
        await swapIn(written.temporary, journalPath);
        try {
          await files.journal.close();
          files.journal = await DurableFile.open(journalPath);
        } catch (error) {
          throw new StorageFault(journalPath, "reopening the compacted journal", error as NodeJS.ErrnoException);
        }
        return true;
      });
      if (!swapped) return void (await rm(written.temporary, { force: true }));
      this.#records = Math.min(counted, keep) + (this.#records - counted);
      log.info({ before: written.before, after: written.after, revision: table.revision }, "compacted the journal");
    })()
      .catch((error: unknown) => {
        if (error instanceof StorageFault) return this.#settings.fault(error);
        this.#records = 0; // try again after as many changes again
        log.error({ err: error }, "compaction failed; the journal is left as it was");
      })
      .finally(() => (this.#running = undefined));
  }
}

/**
 * The journal (its first `upTo` bytes) rewritten as the state before its last `keep` changes plus
 * those changes, and a marker with the inbox position, to PATH.compacting, fsync'd and checked:
 * replaying it gives the same table, revision and position. `swapIn` then puts it in the journal's
 * place, so a crash leaves either the old journal or the new one. Streams: the journal is read
 * once into one state (and the last `keep` changes), the file written in chunks, and the check
 * replays it once that state is let go; its time is linear in the journal.
 */
export async function compactJournal(
  path: string,
  schemas: Schemas,
  keep: number,
  options: Pick<ReplayOptions, "validators" | "upTo" | "judged"> & { sealing?: SecretsKey } = {},
): Promise<Compacted> {
  const { sealing, ...replay } = options;
  // the replayed state is used up by the writing, and let go before the check replays the file
  const written = await writeCompacted(path, await replayJournal(path, schemas, { ...replay, history: true, historyLast: keep }), schemas, keep, sealing);
  await checkCompacted(path, written, schemas, replay.judged);
  return written;
}

/** How many keys a step over a whole state takes before it gives the event loop a turn (a batch waits no longer than that). */
const KEYS_PER_TURN = 2000;

/** A compacted journal written, and what replaying it must give. */
export interface Compacted {
  temporary: string;
  before: number;
  after: number;
  expected: { revision: number; seq: number; position: JournalState["position"]; digest: string };
}

/**
 * The compacted journal, written to PATH.compacting and fsync'd. `state` is used up: the kept
 * changes are undone in its configs (one copy of the state is held, not two).
 */
async function writeCompacted(path: string, state: JournalState, schemas: Schemas, keep: number, sealing: SecretsKey | undefined): Promise<Compacted> {
  if (state.torn !== undefined) throw new CdpError("usage", `${path} ends with a torn record: start cdp watch once to repair it`);
  for (const [app, schema] of schemas) {
    const installed = state.versions.get(app);
    if (installed && installed.version !== schema.version) {
      const fix = installed.vetoed
        ? `moving to version ${schema.version} was vetoed: put the file of version ${installed.version} back, then compact`
        : "start cdp watch once to migrate, then compact";
      throw new CdpError("usage", `${app}'s schema file is version ${schema.version} but the journal is at version ${installed.version}: ${fix}`);
    }
  }
  let kept = keep > 0 ? state.history.slice(-keep) : [];
  // the state before a migration has another shape: what is kept starts after the last one
  const after = kept.map((entry) => entry.migration !== undefined).lastIndexOf(true) + 1;
  kept = kept.slice(after);
  const baseRevision = kept[0] ? kept[0].revision - 1 : state.revision;
  const expected = { revision: state.revision, seq: state.seq, position: state.position, digest: await digestOf(state.apps) };
  const base = undoInPlace(state.apps, kept);

  const time = new Date().toISOString();
  // the versions in force and every step known come first: the way back outlives compaction
  const entries = Object.fromEntries(
    [...state.versions].map(([app, { version, source, steps, vetoed }]) => [
      app,
      { version, schema: source, steps: Object.fromEntries(steps), ...(vetoed ? { vetoed } : {}) },
    ]),
  );
  const temporary = `${path}.compacting`;
  const file = await open(temporary, "w", 0o600);
  let size = 0;
  let chunk = "";
  const write = async (text: string, last = false) => {
    chunk += text;
    if (chunk.length < 1 << 20 && !last) return;
    size += Buffer.byteLength(chunk);
    await file.write(chunk);
    chunk = "";
  };
  try {
    await takeDirectoryOwner(file, dirname(path)); // root's cdp compact of a service user's journal
    if (state.versions.size > 0) await write(schemaRecord({ seq: state.seq, time, source: "compaction" }, undefined, entries));
    await write(baseRecord(baseRevision, state.seq, time, `compaction (the state at revision ${baseRevision})`));
    for await (const line of linesOfState(base, schemas, sealing)) await write(`${line}\n`);
    for (const entry of kept) await write(entry.record.startsWith("#") ? entry.record : handWrittenRecord(entry, state.seq, entry.record));
    // the changes in time still due go on being due
    for (const entry of state.schedules.values()) await write(scheduleRecord({ seq: state.seq, time, source: "compaction" }, entry));
    // revisions with no change here (a fleet's rollout steps elsewhere) after the last change kept
    const lastKept = kept.at(-1)?.revision ?? baseRevision;
    if (state.revision > lastKept) await write(markerRecord({ seq: state.seq, time, source: "compaction", marker: "compaction" }, state.revision));
    if (state.position) await write(positionRecord({ seq: state.seq, time, source: `${INBOX_FILE}:${state.position.line}`, position: state.position }));
    await write("", true);
    await file.sync();
  } finally {
    await file.close();
  }
  return { temporary, before: state.length, after: size, expected };
}

/** The compacted file must replay to the state it was written from; otherwise it is removed. */
async function checkCompacted(path: string, { temporary, expected }: Compacted, schemas: Schemas, judged = false): Promise<void> {
  const check = await replayJournal(temporary, schemas, { judged });
  const same = check.revision === expected.revision && check.seq === expected.seq && isDeepStrictEqual(check.position, expected.position);
  if (!same || (await digestOf(check.apps)) !== expected.digest) {
    await rm(temporary, { force: true });
    throw new Error(`compaction of ${path} would change the configuration; the journal is left as it was`);
  }
}

/** The apps' configs before the kept changes: undone in place, newest first. */
function undoInPlace(apps: Map<string, AppConfig>, kept: readonly HistoryEntry[]): Map<string, AppConfig> {
  for (const entry of kept.slice().reverse()) {
    if (!entry.step) apps.set(entry.app, setInPlace(apps.get(entry.app)!, entry.key.split("."), entry.previous));
  }
  return apps;
}

/** A digest of the apps' configs that does not depend on the order of keys; it gives way between top-level keys. */
async function digestOf(apps: ReadonlyMap<string, AppConfig>): Promise<string> {
  const hash = createHash("sha256");
  const walk = (value: unknown): void => {
    if (value === null || typeof value !== "object") return void hash.update(`${JSON.stringify(value) ?? "undefined"};`);
    if (Array.isArray(value)) {
      hash.update(`[${value.length}`);
      for (const item of value) walk(item);
      return void hash.update("]");
    }
    for (const key of opened(value)) walkEntry(value as Record<string, unknown>, key);
    hash.update("}");
  };
  const opened = (object: object) => {
    const keys = Object.keys(object).sort();
    hash.update(`{${keys.length}`);
    return keys;
  };
  const walkEntry = (object: Record<string, unknown>, key: string) => {
    hash.update(`${JSON.stringify(key)}:`);
    walk(object[key]);
  };
  for (const app of [...apps.keys()].sort()) {
    hash.update(`${JSON.stringify(app)}=`);
    // walked as `walk` walks an object, giving way between its keys
    const config = apps.get(app)!;
    for (const [i, key] of opened(config).entries()) {
      walkEntry(config, key);
      if ((i + 1) % KEYS_PER_TURN === 0) await nextTurn();
    }
    hash.update("}");
  }
  return hash.digest("hex");
}

/** Copy bytes [from, to) of `source` to the end of `target`, then fsync `target`. */
async function appendRange(source: string, from: number, to: number, target: string): Promise<void> {
  if (to <= from) return;
  const [input, output] = [await open(source, "r"), await open(target, "a")];
  try {
    const buffer = Buffer.allocUnsafe(1 << 20);
    for (let at = from; at < to; ) {
      const { bytesRead } = await input.read(buffer, 0, Math.min(buffer.length, to - at), at);
      if (bytesRead === 0) throw new Error(`${source} ended at ${at} bytes, before ${to}`);
      await output.write(buffer.subarray(0, bytesRead));
      at += bytesRead;
    }
    await output.sync();
  } finally {
    await Promise.all([input.close(), output.close()]);
  }
}

/** The compacted file takes the journal's place, durably. */
export async function swapIn(temporary: string, path: string): Promise<void> {
  await rename(temporary, path);
  await syncDirectory(dirname(path));
}

/**
 * A configuration as change lines: one per top-level key whose value is not its schema default
 * (secret ones sealed with `sealing`); it gives the event loop a turn every few thousand keys
 * (a fleet's trim of a large state runs beside the pipeline).
 */
export async function stateLines(apps: ReadonlyMap<string, AppConfig>, schemas: Schemas, sealing?: SecretsKey): Promise<string[]> {
  const lines: string[] = [];
  for await (const line of linesOfState(apps, schemas, sealing)) lines.push(line);
  return lines;
}

/** `stateLines` one at a time: a large app's are written without a copy of its config or a list of them all. */
async function* linesOfState(apps: ReadonlyMap<string, AppConfig>, schemas: Schemas, sealing?: SecretsKey): AsyncGenerator<string> {
  for (const [app, config] of apps) {
    const schema = schemas.get(app);
    if (!schema) continue;
    for (const [i, key] of Object.keys(config).entries()) {
      if ((i + 1) % KEYS_PER_TURN === 0) await nextTurn();
      const stored = config[key];
      if (stored === undefined) continue; // undone to nothing: as JSON, no key
      const value: unknown = JSON.parse(JSON.stringify(stored));
      if (!isDeepStrictEqual(value, schema.defaults[key])) yield encodeChange(app, key, value, schema.key([key]) as KeyInfo, sealing);
    }
  }
}
