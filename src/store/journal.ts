// Stage 5a: the journal `cdp`: the persisted configuration, replayed at start, appended durably.
// What its records look like is records.ts; its compaction, compactor.ts.
import { createReadStream } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import type { Logger } from "pino";
import type { InboxPosition } from "../inbox/inbox.js";
import { CdpError } from "../errors.js";
import { DurableFile } from "./durable.js";
import { parseLine, type ParsedLine } from "../lines/parse.js";
import { InstalledSchemas, type InstalledVersion, type Migrated } from "./installed.js";
import { META, readMeta, readScheduleRecord, readSchemaRecord, type Meta, type Scheduled } from "./records.js";
import type { KeyInfo, Schemas } from "../schemas/schemas.js";
import { describeSchemaError } from "../schemas/schemas.js";
import { decodeValue, runValidators, type AppValidator } from "../schemas/validate.js";
import { freezeDeep, getIn, setInPlace, type AppConfig } from "../lines/values.js";

export const JOURNAL_FILE = "cdp";

export {
  baseRecord,
  changeRecord,
  divergedRecord,
  encodeChange,
  markerRecord,
  positionRecord,
  readMeta,
  scheduleDoneRecord,
  scheduleRecord,
  schemaRecord,
  upgradeRecord,
  vetoRecord,
  type Commit,
  type Scheduled,
  type SchemaEntries,
} from "./records.js";

/** Where processing stands once the journal is read: the table's state and the inbox cursor. */
export interface JournalState {
  apps: Map<string, AppConfig>;
  revision: number;
  /** How many inbox lines (accepted or rejected) have been committed. */
  seq: number;
  /** The inbox position after the last committed line, if cdp has processed any. */
  position: InboxPosition | undefined;
  /** When that position was committed (ms since the epoch). */
  positionTime?: number;
  /** Byte length of the journal's valid part (a torn last record is not counted). */
  length: number;
  /** The torn last record, if a crash cut an append short. */
  torn: string | undefined;
  /** The last line was hand-written without its newline: add one before appending. */
  unterminated: boolean;
  /** With `history`: every change since `historyFrom`, oldest first. */
  history: HistoryEntry[];
  /** The revision the journal's history starts from (not 0 once compacted). */
  historyFrom: number;
  /** How many change records the journal holds after its compacted state. */
  records: number;
  /** The first fleet revision this host's schemas refused (a `diverged` record), and its line. */
  divergedFrom?: { revision: number; line: number };
  /** Each app's schema version as the journal last recorded it (none: never recorded, the file's is assumed). */
  versions: ReadonlyMap<string, InstalledVersion>;
  /** The changes in time still due, by id, in the order they were made. */
  schedules: Map<string, Scheduled>;
}

export interface ReplayOptions {
  /** The apps' code-level checks, run on the replayed config. */
  validators?: ReadonlyMap<string, readonly AppValidator[]>;
  /** Collect every change with its previous value (for `cdp history` and rollback). */
  history?: boolean;
  /** With `history`: keep only the last this many entries (compaction needs no more). */
  historyLast?: number;
  /** Read only the first this many bytes (the journal as it was when a compaction began). */
  upTo?: number;
  /** The schemas a running cdp holds: lines the journal has no schema record for are read with them where their version differs from the files'. */
  inForce?: Schemas;
  /**
   * Skip the whole-config check at the end: the watcher's own compaction reads a journal whose
   * every change it judged (and checks its rewrite by digest); at 300,000 keys the check held the
   * event loop for half a second.
   */
  judged?: boolean;
}

/** One accepted change as the journal records it. */
export interface HistoryEntry {
  revision: number;
  /** When it was applied (absent for hand-written lines). */
  time: string | undefined;
  source: string;
  app: string;
  key: string;
  value: unknown;
  previous: unknown;
  secret: boolean;
  /** The record as the journal holds it (metadata comment and change line). */
  record: string;
  /** Why the change was made: given by whoever made it (`# reason:`), or cdp's own (a vetoed change's revert). */
  reason?: string;
  /** Who made the change (`# by:` in the inbox: the pushing user, the sidecar's token name). */
  by?: string;
  /** A migration of the app's whole config between schema versions (key is ""; no value). */
  migration?: { from: number; to: number };
  /** A fleet rollout's step that changed nothing here (key is ""; no value): the reason says what it was. */
  step?: { rollout: string; step: string };
}

/** Read and check the journal from the top. A line that does not hold stops start-up with file:line and why. */
export async function replayJournal(path: string, schemas: Schemas, options: ReplayOptions = {}): Promise<JournalState> {
  const replay = new Replay(path, await InstalledSchemas.read(path, schemas, options.inForce), schemas, options);
  // Each line is replayed once the next is known: a last line without "\n" is an append that a
  // crash cut short when it is (part of) one of cdp's metadata comments or follows one (then both
  // are dropped); otherwise a hand-written journal just lacks its final newline.
  let held: string | undefined;
  let number = 0;
  const { tail, size } = await readLines(path, options.upTo, (lines) => {
    for (const line of lines) {
      if (held !== undefined) replay.line(held, number);
      held = line;
      number++;
    }
  });
  const state = replay.state;
  state.length = size;
  if (tail.startsWith("#") || (tail !== "" && held !== undefined && META.test(held))) {
    state.torn = tail.startsWith("#") ? tail : `${held}\n${tail}`;
    if (!tail.startsWith("#")) held = undefined;
    state.length -= Buffer.byteLength(state.torn);
  }
  if (held !== undefined) replay.line(held, number);
  if (tail !== "" && state.torn === undefined) {
    replay.line(tail, number + 1);
    state.unterminated = true;
  }
  replay.settle();
  const failure = options.judged ? undefined : replay.checkWhole();
  if (failure) {
    const where = await lineSetting(path, options.upTo, failure, state.torn === undefined);
    throw new CdpError("bootstrap", `${where === undefined ? failure.file : `${path}:${where}`}: ${failure.reason}`);
  }
  return state;
}

/** Why an app's whole config does not hold after replay: the schema's first error, at `key` ("" for the whole config). */
interface WholeFailure {
  app: string;
  key: string;
  reason: string;
  /** The schema file, named when no journal line set the key (a default broke the rule). */
  file: string;
}

/**
 * The journal line that last set the failing key, a key above it or a key below it. Read again
 * only when start-up fails: kept for every key as it replayed, it held a map as large as the
 * config (300,000 keys: 30 MB and a fifth of the start-up).
 */
async function lineSetting(path: string, upTo: number | undefined, { app, key }: WholeFailure, withTail: boolean): Promise<number | undefined> {
  let found: number | undefined;
  let number = 0;
  const consider = (raw: string) => {
    number++;
    if (raw.charCodeAt(0) === 0x23) return;
    const parsed = parseLine(raw.endsWith("\r") ? raw.slice(0, -1) : raw);
    if (parsed.kind !== "change" || parsed.app !== app) return;
    const set = parsed.key;
    if (key === "" || set === key || set.startsWith(`${key}.`) || key.startsWith(`${set}.`)) found = number;
  };
  const { tail } = await readLines(path, upTo, (lines) => lines.forEach(consider));
  if (withTail && tail !== "") consider(tail);
  return found;
}

const NO_META: Meta = Object.freeze({});

// With 256 KiB a chunk's lines outlived young-generation collections, V8 doubled its new space to
// 32 MB, and a watcher kept that after start-up (RSS after a 1M-line replay 104 -> 83 MB, and faster).
const REPLAY_CHUNK = 64 << 10;

// A change record's comment as cdp writes it for a line of its inbox (not a schema upgrade, a
// fleet's refusal or a marker, which are read whole): only its revision is needed as it is read.
const PLAIN_RECORD = /^# rev=(\d+) seq=\d+ time=\S+ source=(?!schema:|diverged:)\S+ inbox=[^\s@]+@\d+(?:\/[0-9a-f]+)?(?: by=\S+)?(?: reason: .*)?$/;

/** The journal's lines applied one by one to the apps' configs. */
class Replay {
  readonly state: JournalState;
  readonly #path: string;
  readonly #schemas: Schemas;
  readonly #installed: InstalledSchemas;
  readonly #options: ReplayOptions;
  // Replay builds each app's config in place (a copy per line would be quadratic in its keys);
  // with history, each value is frozen as it is set, so that setting below it later copies it
  // and the entries keep the values they saw.
  #meta: Meta = {}; // the metadata comment that applies to the next change line
  #metaText = "";
  #positioned: string | undefined; // without history: the last change record's comment, read once at the end for the inbox position

  constructor(path: string, installed: InstalledSchemas, schemas: Schemas, options: ReplayOptions) {
    [this.#path, this.#installed, this.#schemas, this.#options] = [path, installed, schemas, options];
    const apps = new Map([...schemas.keys()].map((app) => [app, structuredClone(installed.schemaOf(app)!.defaults)]));
    this.state = {
      apps,
      revision: 0,
      seq: 0,
      position: undefined,
      length: 0,
      torn: undefined,
      unterminated: false,
      history: [],
      historyFrom: 0,
      records: 0,
      versions: installed.versions,
      schedules: new Map(),
    };
  }

  line(raw: string, number: number): void {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (line.charCodeAt(0) === 0x23) {
      this.#comment(line, number); // "#": most of a journal's lines
      return;
    }
    const parsed = parseLine(line);
    if (parsed.kind === "blank") return;
    if (parsed.kind === "comment") {
      this.#comment(line, number);
      return;
    }
    if (parsed.kind === "error") throw this.#fail(number, parsed.message);
    this.#change(parsed, line, number);
  }

  #fail(number: number, reason: string): CdpError {
    return new CdpError("bootstrap", `${this.#path}:${number}: ${reason}`);
  }

  #comment(line: string, number: number): void {
    const state = this.state;
    // without history, a change's comment is needed only for its revision, and the last one for the inbox position
    const plain = this.#options.history ? null : PLAIN_RECORD.exec(line);
    if (plain) {
      this.#meta = { rev: Number(plain[1]) };
      this.#positioned = line;
      return;
    }
    const taken = readSchemaRecord(line);
    if (taken) {
      this.#schemasTaken(taken, line, number);
      return;
    }
    const scheduled = readScheduleRecord(line);
    if (scheduled) {
      if ("made" in scheduled) state.schedules.set(scheduled.made.id, scheduled.made);
      else state.schedules.delete(scheduled.done.id);
      return;
    }
    const meta = readMeta(line);
    if (meta.seq === undefined) return; // an operator's comment
    [this.#meta, this.#metaText] = [meta, line];
    // a schema upgrade, a fleet change refused here, a rollout's step elsewhere: a revision without a change line
    if (meta.source?.startsWith("schema:") || meta.source?.startsWith("diverged:") || meta.marker !== undefined) {
      state.revision = meta.rev!;
      if (meta.marker !== undefined) this.#marked(meta, line);
      if (meta.source?.startsWith("diverged:")) state.divergedFrom ??= { revision: meta.rev!, line: number };
      this.#meta = {};
      if (meta.marker === undefined || !meta.position) return;
    }
    if (meta.base) {
      state.revision = meta.rev!; // a compacted journal starts with the state at this revision
      state.historyFrom = meta.rev!;
    }
    if (meta.position) this.#takePosition(meta);
  }

  #takePosition(meta: Meta): void {
    this.state.seq = meta.seq!;
    this.state.position = meta.position;
    this.state.positionTime = meta.time === undefined ? undefined : Date.parse(meta.time);
    this.#positioned = undefined;
  }

  /** Once every line is read: the inbox position of the last plain change record, if it came last. */
  settle(): void {
    if (this.#positioned !== undefined) this.#takePosition(readMeta(this.#positioned));
  }

  // A rollout's step this host applied nothing at (marker=rollout:ID:STEP:APP) is in its history all the same, with why.
  #marked(meta: Meta, line: string): void {
    const [kind, rollout, step, app] = meta.marker!.split(":");
    if (!this.#options.history || (kind !== "rollout" && kind !== "schedule") || !rollout || !step || !app) return;
    // an expiry that left a key alone (marker=schedule:ID:kept:APP): its reason says which and why
    if (kind === "schedule") {
      this.state.history.push(appEntry({ revision: meta.rev!, time: meta.time, source: meta.source ?? "", reason: meta.reason }, app, line, {}));
      return;
    }
    this.state.history.push(
      appEntry({ revision: meta.rev!, time: meta.time, source: meta.source ?? "", reason: meta.reason }, app, line, { step: { rollout, step } }),
    );
  }

  // The schemas cdp took: apps whose version changed are migrated here, as they were then.
  #schemasTaken(taken: NonNullable<ReturnType<typeof readSchemaRecord>>, line: string, number: number): void {
    let migrated: Migrated[];
    try {
      migrated = this.#installed.take(taken.entries, this.state.apps);
    } catch (error) {
      throw this.#fail(number, (error as Error).message);
    }
    [this.#meta, this.#metaText] = [{}, ""];
    if (taken.rev === undefined) return;
    this.state.revision = taken.rev;
    if (!this.#options.history) return;
    for (const { app, from, to } of migrated) this.state.history.push(appEntry({ ...taken, revision: taken.rev }, app, line, { migration: { from, to } }));
  }

  #change(parsed: Extract<ParsedLine, { kind: "change" }>, line: string, number: number): void {
    const { state } = this;
    const schema = this.#installed.schemaOf(parsed.app);
    if (!schema) throw this.#fail(number, `unknown app "${parsed.app}" (no ${parsed.app}.schema.json)`);
    const info: KeyInfo | string = schema.key(parsed.path);
    if (typeof info === "string") throw this.#fail(number, `${parsed.app}${info}`);
    const decoded = decodeValue(parsed.valueText, info);
    if (!decoded.ok) throw this.#fail(number, `${parsed.app}.${parsed.key} ${decoded.reason}`);
    const before = state.apps.get(parsed.app)!;
    const previous = this.#options.history ? getIn(before, parsed.path) : undefined;
    state.apps.set(parsed.app, setInPlace(before, parsed.path, this.#options.history ? freezeDeep(decoded.value) : decoded.value));
    const meta = this.#meta;
    if (meta.base) return; // part of the compacted state: no revision of its own
    state.revision = meta.rev ?? state.revision + 1;
    state.records++;
    if (this.#options.history) {
      const { time, source, reason, by } = meta;
      const record = `${this.#metaText && meta.rev !== undefined ? `${this.#metaText}\n` : ""}${line}\n`;
      // one literal, fields added after it: spreads here made every entry in V8's slow path (a
      // compaction's replay of 3M lines spent two thirds of its time and all its full GCs on them)
      const entry: HistoryEntry = {
        revision: state.revision,
        app: parsed.app,
        key: parsed.key,
        value: decoded.value,
        previous,
        secret: info.secret,
        time,
        source: source ?? `${JOURNAL_FILE}:${number}`,
        record,
      };
      if (reason !== undefined) entry.reason = reason;
      if (by !== undefined) entry.by = by;
      state.history.push(entry);
      const last = this.#options.historyLast;
      if (last !== undefined && state.history.length >= 2 * last + 64) state.history.splice(0, state.history.length - last);
    }
    this.#meta = NO_META;
    this.#metaText = "";
  }

  /** The whole config of every app must hold, as if each change had come through the inbox: the first that does not, if any. */
  checkWhole(): WholeFailure | undefined {
    const validators = this.#options.validators ?? new Map<string, readonly AppValidator[]>();
    for (const app of this.#schemas.keys()) {
      const schema = this.#installed.schemaOf(app)!;
      const config = (this.#options.history ? structuredClone(this.state.apps.get(app)!) : this.state.apps.get(app)!) as Record<string, unknown>;
      if (!schema.validate(config)) {
        const error = schema.validate.errors![0]!;
        return { app, key: error.instancePath.split("/").slice(1).join("."), reason: describeSchemaError(schema, error, config), file: schema.file };
      }
      const refusal = this.#installed.isCurrent(app) ? runValidators(schema, validators.get(app), config) : undefined; // the code checks its own version
      if (refusal) throw new CdpError("bootstrap", `${this.#path}: ${refusal}`);
      this.state.apps.set(app, config);
    }
  }
}

/**
 * Read a file (its first `upTo` bytes) in chunks, handing over its complete lines; the
 * unterminated tail is returned. Each chunk is a turn of the event loop: a compaction reading
 * beside the pipeline holds it up for one chunk at a time (64 KiB: about 4 ms).
 */
async function readLines(path: string, upTo: number | undefined, take: (lines: string[]) => void): Promise<{ tail: string; size: number }> {
  let handle: FileHandle;
  try {
    handle = await open(path, "r");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return { tail: "", size: 0 };
    throw error;
  }
  try {
    const buffer = Buffer.allocUnsafe(REPLAY_CHUNK);
    const limit = upTo ?? Infinity;
    const want = (size: number) => Math.min(buffer.length, limit - size);
    // the bytes after the last newline read so far: decoded with the rest of their line (a newline never splits a UTF-8 sequence)
    let carry: Buffer = Buffer.alloc(0);
    let size = 0;
    for (
      let read = (await handle.read(buffer, 0, want(0), null)).bytesRead;
      read > 0;
      read = size >= limit ? 0 : (await handle.read(buffer, 0, want(size), null)).bytesRead
    ) {
      size += read;
      const chunk = buffer.subarray(0, read);
      const last = chunk.lastIndexOf(0x0a);
      if (last === -1) {
        carry = Buffer.concat([carry, chunk]);
        continue;
      }
      const text = carry.length === 0 ? chunk.toString("utf8", 0, last) : Buffer.concat([carry, chunk.subarray(0, last)]).toString("utf8");
      take(text.split("\n"));
      carry = Buffer.from(chunk.subarray(last + 1)); // the buffer is read into again
    }
    return { tail: carry.toString("utf8"), size };
  } finally {
    await handle.close();
  }
}

/** The journal file, open for durable appends; a torn last record is cut off, a copy kept in `cdp.torn`. */
export async function openJournal(path: string, state: JournalState): Promise<DurableFile> {
  const file = await DurableFile.open(path);
  if (state.torn !== undefined) {
    const copy = await DurableFile.open(`${path}.torn`);
    await copy.appendDurably(`# cut from ${path} at byte ${state.length} on ${new Date().toISOString()}\n${state.torn}\n`);
    await copy.close();
    await file.truncateDurably(state.length);
  } else if (state.unterminated) await file.appendDurably("\n");
  return file;
}

/**
 * Cut the journal just before its line `line` (1-based), durably: a fleet host drops what
 * followed a change it refused, to read it again from the fleet's log under newer schemas.
 */
export async function truncateJournalBefore(path: string, line: number): Promise<void> {
  let offset = 0;
  let seen = 1;
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
    for (let at = chunk.indexOf(0x0a); at !== -1 && seen < line; at = chunk.indexOf(0x0a, at + 1)) {
      seen++;
      if (seen === line) offset += at + 1;
    }
    if (seen === line) break;
    offset += chunk.length;
  }
  const file = await DurableFile.open(path);
  try {
    await file.truncateDurably(offset);
  } finally {
    await file.close();
  }
}

/** The journal, replayed and checked at start: where processing stands. A fleet host drops what its schemas refused before. */
export async function replayForStart(
  journalPath: string,
  schemas: Schemas,
  options: { validators: ReadonlyMap<string, readonly AppValidator[]>; fleet: boolean; log: Logger },
): Promise<JournalState> {
  const { log, validators } = options;
  let state = await replayJournal(journalPath, schemas, { validators });
  if (options.fleet && state.divergedFrom) {
    // the schemas may take them now (a rolling upgrade reached this host): read them again from the fleet
    log.warn(
      { revision: state.divergedFrom.revision },
      "this host refused fleet changes from this revision on: reading them again from the fleet's log under the current schemas",
    );
    await truncateJournalBefore(journalPath, state.divergedFrom.line);
    state = await replayJournal(journalPath, schemas, { validators });
  }
  if (state.torn !== undefined) {
    log.warn({ kept: `${JOURNAL_FILE}.torn` }, "the journal's last record was cut short by a crash: cut off (a copy is kept) and its line is read again");
  }
  return state;
}

/** A history entry of a whole app with no key's value (a rollout's step applied nowhere here, a migration). */
function appEntry(
  at: { revision: number; time: string | undefined; source: string; reason?: string | undefined },
  app: string,
  line: string,
  what: Pick<HistoryEntry, "step"> | Pick<HistoryEntry, "migration"> | Record<string, never>,
): HistoryEntry {
  const entry: HistoryEntry = {
    revision: at.revision,
    time: at.time,
    source: at.source,
    app,
    key: "",
    value: undefined,
    previous: undefined,
    secret: false,
    record: `${line}\n`,
    ...what,
  };
  if (at.reason !== undefined) entry.reason = at.reason;
  return entry;
}
