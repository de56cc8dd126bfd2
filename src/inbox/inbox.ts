// Stage 1: tail `cdp.new`: read complete lines from the saved position, in order, across
// rotation, truncation and re-saves. wakeups.ts says when to read (events are only hints),
// rotation.ts finds the inbox's files and copies, tail.ts reads one file.
import { createHash } from "node:crypto";
import { lstatSync } from "node:fs";
import { stat } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import { Outages } from "./outages.js";
import {
  findCopy,
  holdsCopy,
  identityOf,
  INBOX_FILE,
  listInboxFiles,
  notRegular,
  openRegular,
  resumeIn,
  whileMoving,
  type InboxFile,
  type InboxPosition,
  type Resumed,
} from "./rotation.js";
import { TailedFile, type InboxLine } from "./tail.js";
import { Wakeups } from "./wakeups.js";

export { INBOX_FILE, type InboxPosition } from "./rotation.js";
export { CUT_SHORT, linesOf, toInboxLine, type InboxLine } from "./tail.js";

export interface InboxBatch {
  file: string;
  lines: InboxLine[];
  /**
   * Lines a writer appended to a file after cdp had finished it (it held the file open across a
   * rotation): the position to record is where reading stands, not in that file.
   */
  late?: InboxPosition;
}

/** How the inbox is read and supervised (resolved once, from the CLI or the library options). */
export interface InboxSettings {
  /** Lines longer than this many bytes are rejected, never buffered. */
  maxLineBytes: number;
  /** The periodic check, for events that never come. */
  pollIntervalMs: number;
  /** Use file-system events (false: the periodic check alone, e.g. on network file systems). */
  watchEvents: boolean;
  /** An outage longer than this stops cdp (exit 3). */
  maxOutageMs: number;
  /** More outages than this within `outageWindowMs` stop cdp (exit 3). */
  maxOutages: number;
  outageWindowMs: number;
}

export interface InboxOptions extends InboxSettings {
  dir: string;
  log: Logger;
  /** The position committed in the journal, if any. */
  resumeAt: InboxPosition | undefined;
  /** When that position was committed (ms): rotated files written since then are unread. */
  resumeSince?: number;
}

/** While the inbox is unavailable, it is tried again this often. */
const RETRY_MS = 1000;
/** A file finished because it was rotated is still read this long, for writers that had it open. */
const LATE_MS = 5000;
/** At most this many finished files are read for late lines (each holds a descriptor). */
const LATE_FILES = 32;

export class Inbox {
  readonly path: string;
  #options: InboxOptions;
  #wakeups: Wakeups;
  #closed = false;
  #outages: Outages;

  #current: TailedFile | undefined;
  #resumeAt: InboxPosition | undefined;
  // The last file read to its end; before any, the journal's file (or none) as of when it was
  // committed (or cdp started): files modified since then are unread.
  #finished: InboxPosition & { modifiedNs: bigint };
  #late: { file: TailedFile; until: number }[] = [];
  // The rotated files there when cdp last finished a file or found cdp.new truncated (or first
  // started it): one that appears while none of cdp.new is read may be logrotate's copy of lines
  // cdp never read (copytruncate), which the truncated cdp.new no longer holds and no bytes read
  // can be matched against.
  #rotatedAtStart: Set<string> | undefined;

  constructor(options: InboxOptions) {
    this.#options = options;
    this.path = join(options.dir, INBOX_FILE);
    this.#outages = new Outages(options, this.path, options.log);
    this.#wakeups = new Wakeups(options.dir, options.log);
    this.#resumeAt = options.resumeAt;
    const since = options.resumeAt ? (options.resumeSince ?? Date.now()) : Date.now();
    this.#finished = { file: options.resumeAt?.file ?? "", offset: 0, line: 0, modifiedNs: BigInt(Math.floor(since)) * 1_000_000n };
  }

  /** Start watching; resolves once the watch is in place. */
  start(): Promise<void> {
    return this.#wakeups.start(this.#options);
  }

  /** Batches of complete lines, in order, until `close()`. */
  async *batches(): AsyncGenerator<InboxBatch> {
    try {
      while (!this.#closed) {
        this.#wakeups.reading();
        const batch = await this.#read();
        if (this.#outages.failure) throw this.#outages.failure;
        if (batch) {
          yield batch;
          continue;
        }
        await this.#wakeups.next();
      }
    } finally {
      await this.#current?.close();
      this.#current = undefined;
      await Promise.allSettled(this.#late.splice(0).map(({ file }) => file.close()));
    }
  }

  /** Stop watching; `batches()` ends after the batch in hand. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#wakeups.close();
  }

  /** Why the inbox cannot be read right now, or undefined while it can. */
  get unavailable(): string | undefined {
    return this.#outages.current;
  }

  /** How many outages there were since start. */
  get outages(): number {
    return this.#outages.count;
  }

  async #read(): Promise<InboxBatch | undefined> {
    try {
      const batch = await this.#readAvailable();
      // the old watch may have died with the directory
      if (this.#outages.ended() && this.#options.watchEvents) await this.#wakeups.watch();
      return batch;
    } catch (error) {
      await this.#current?.close().catch(() => undefined);
      this.#current = undefined;
      // tried again each second; past the supervision limits, cdp stops so that a supervisor restarts it (exit 3)
      this.#outages.failed(error as NodeJS.ErrnoException);
      setTimeout(() => this.#wakeups.hint(), RETRY_MS).unref();
      return undefined;
    }
  }

  async #readAvailable(): Promise<InboxBatch | undefined> {
    const late = await this.#readLate();
    if (late) return late;
    for (;;) {
      if (!this.#current && !(await this.#openNext())) {
        await stat(this.#options.dir); // a missing file is normal, a missing directory an outage
        return undefined;
      }
      const current = this.#current!;
      if (current.end.offset === 0 && this.#rotatedAtStart && (await this.#copiedBeforeRead(current))) continue;
      const lines = current.readLines();
      if (lines === "changed") {
        await this.#rewritten(current);
        continue;
      }
      if (lines === undefined) continue; // only part of a line so far: read on
      if (lines.length > 0) return { file: current.id, lines };
      if (current.pending > 0) this.#options.log.debug({ line: current.mark.line + 1, bytes: current.pending }, "waiting for the rest of a line");
      const end = await this.#atEnd(current);
      if (end === "idle") return undefined;
      if (end !== "read on") return end;
    }
  }

  /** Open the next file to read: at start where the journal left off, then whatever follows the file finished. */
  #openNext(): Promise<boolean> {
    return whileMoving(() => this.#openNextListed());
  }

  async #openNextListed(): Promise<boolean> {
    const here = lstatSync(this.path, { throwIfNoEntry: false });
    const why = here && notRegular(here, this.path);
    if (why) throw Object.assign(new Error(why), { code: "ENOTREG" });
    const files = await listInboxFiles(this.#options.dir);
    const resume = this.#resumeAt;
    if (resume && (await this.#resume(files, resume))) return true;
    this.#resumeAt = undefined;
    // what follows the finished file: the files after it in rotation order; when it is gone, those written after it
    const finished = this.#finished;
    const at = files.findIndex((file) => file.id === finished.file);
    const next = at >= 0 ? files[at + 1] : files.find((file) => file.name === INBOX_FILE || file.modifiedNs > finished.modifiedNs);
    if (!next || this.#late.some(({ file }) => file.id === next.id)) return false;
    const resaved = finished.offset > 0 && (await resumeIn(next, finished)); // an editor's save: the same bytes, and maybe more
    if (resaved) {
      this.#options.log.info({ path: next.path }, "the inbox was saved again as a new file with the same lines: reading on after them");
      return this.#use(new TailedFile(resaved, finished.line, this.#options.maxLineBytes));
    }
    if (at < 0 && finished.file !== "" && next.name !== INBOX_FILE)
      this.#options.log.warn({ path: next.path }, "the inbox file cdp was reading is gone: reading the rotated files written since, oldest first");
    return this.#start(next);
  }

  /**
   * At start: the file the journal names, at its position, if it still holds the bytes read before
   * (renamed or not); otherwise the copy that holds them (copytruncate, an editor's save), or the
   * file from its start. False when the file is gone: then what was written since is read.
   */
  async #resume(files: InboxFile[], resume: InboxPosition): Promise<boolean> {
    const { log, maxLineBytes } = this.#options;
    const same = files.find((file) => file.id === resume.file);
    const there = same && (await resumeIn(same, resume));
    if (there) {
      if (there.file.name !== INBOX_FILE)
        log.info({ path: there.file.path }, "the inbox was rotated while cdp was stopped: reading the rest of the old file first");
      return this.#use(new TailedFile(there, resume.line, maxLineBytes));
    }
    const copy = await findCopy(files.filter((file) => file.id !== resume.file).reverse(), resume);
    if (copy) {
      log.info(
        { path: copy.file.path },
        same
          ? "the inbox was copied and truncated while cdp was stopped: reading the rest of the copy first"
          : "the inbox was saved again as a new file: reading on after the lines already read",
      );
      return this.#use(new TailedFile(copy, resume.line, maxLineBytes));
    }
    if (same) {
      log.warn(
        { path: same.path },
        "the inbox was truncated or rewritten while cdp was stopped and no copy of the lines read is left: reading it from the start",
      );
      return this.#start(same);
    }
    return false;
  }

  async #start(file: InboxFile | undefined): Promise<boolean> {
    if (file?.name === INBOX_FILE && !this.#rotatedAtStart) await this.#noteRotated();
    const handle = file && (await openRegular(file.path, file.id));
    if (!file || !handle) return false;
    return this.#use(new TailedFile({ file, handle, hash: createHash("sha256"), offset: 0 }, 0, this.#options.maxLineBytes));
  }

  async #noteRotated(files?: InboxFile[]): Promise<void> {
    files ??= await whileMoving(() => listInboxFiles(this.#options.dir));
    this.#rotatedAtStart = new Set(files.filter((file) => file.name !== INBOX_FILE).map((file) => file.id));
  }

  /**
   * cdp.new has bytes, none of them read: a copy made since it was started from its beginning,
   * of lines it no longer holds, is read first (copytruncate before cdp looked). True when cdp
   * now reads such a copy.
   */
  async #copiedBeforeRead(current: TailedFile): Promise<boolean> {
    if (Number(current.stat().size) === 0) return false;
    const known = this.#rotatedAtStart!;
    // a copy renamed meanwhile (another rotation) is looked for again under its new name
    const { files, copy } = await whileMoving(async () => {
      const files = await listInboxFiles(this.#options.dir);
      const inbox = files.find((file) => file.name === INBOX_FILE);
      if (inbox?.id !== current.id) return { files }; // cdp.new was replaced: the end of this file says so
      for (const file of files) {
        if (file.name === INBOX_FILE || file.id === current.id || known.has(file.id) || file.size === 0 || (await holdsCopy(inbox, file))) continue;
        const handle = await openRegular(file.path, file.id);
        if (handle) return { files, copy: { file, handle } };
      }
      return { files };
    });
    await this.#noteRotated(files); // each copy is looked at once
    if (!copy) return false;
    this.#options.log.info({ path: copy.file.path }, "the inbox was copied and truncated before cdp read any of it: reading the copy first");
    await current.close();
    this.#use(new TailedFile({ ...copy, hash: createHash("sha256"), offset: 0 }, 0, this.#options.maxLineBytes));
    return true;
  }

  #use(file: TailedFile): true {
    this.#current = file;
    this.#resumeAt = undefined;
    return true;
  }

  /**
   * cdp.new is still the file being read, but it was truncated (and maybe written again). Where
   * a copy of it holds the lines read so far (logrotate's copytruncate), the rest of the copy is
   * read first; then cdp.new from its start.
   */
  async #rewritten(current: TailedFile): Promise<void> {
    const { log, maxLineBytes } = this.#options;
    const copy = await this.#findCopy(current);
    if (copy) {
      log.info({ path: copy.file.path }, "the inbox was copied and truncated: reading the rest of the copy first");
      await current.close();
      this.#use(new TailedFile(copy, current.mark.line, maxLineBytes));
      return;
    }
    log.warn({ path: this.path }, "the inbox was truncated; reading it from the start");
    current.restart();
  }

  #findCopy(current: TailedFile): Promise<Resumed | undefined> {
    return whileMoving(async () => {
      const files = await listInboxFiles(this.#options.dir);
      await this.#noteRotated(files); // the copy made now is known: a later one is not
      return findCopy(files.filter((file) => file.id !== current.id).reverse(), current.mark);
    });
  }

  /**
   * At the end of the file: is it still cdp.new, and as long as what was read? A file that is no
   * longer cdp.new (rotated, replaced, removed, or a rotated file read at start) is finished: it is
   * still read for late lines a while, and the next read opens what follows it.
   */
  async #atEnd(current: TailedFile): Promise<"idle" | "read on" | InboxBatch> {
    // Synchronous stats (microseconds): this check follows every read, and two thread-pool trips
    // here delayed the next line's read by a good part of a millisecond (npm run bench).
    const info = lstatSync(this.path, { bigint: true, throwIfNoEntry: false });
    const now = info?.isFile() ? identityOf(info) : undefined;
    if (now === current.id) {
      if (!current.rewritten()) return "idle";
      await this.#rewritten(current);
      return "read on";
    }
    // lines may have come between the last read and the rename: read to the very end first
    const open = current.stat();
    if (Number(open.size) > current.end.offset) return "read on";
    this.#finished = { ...current.end, modifiedNs: open.mtimeNs };
    this.#current = undefined;
    await this.#noteRotated(); // cdp.new is read from its start next: a copy made after now is of lines not read
    this.#late.push({ file: current, until: Date.now() + LATE_MS });
    if (this.#late.length > LATE_FILES) await this.#retire(this.#late.shift()!);
    this.#options.log.info({ path: this.path }, now ? "finished an inbox file that is no longer cdp.new; reading what follows it" : "the inbox was removed");
    return "read on";
  }

  /** Lines appended to a finished file by a writer that had it open; a file past its time is closed. */
  async #readLate(): Promise<InboxBatch | undefined> {
    const now = Date.now();
    for (const entry of [...this.#late]) {
      const lines = entry.file.readLines();
      if (Array.isArray(lines) && lines.length > 0) return this.#lateBatch(entry.file, lines);
      if (now < entry.until) continue;
      this.#late.splice(this.#late.indexOf(entry), 1);
      const last = await this.#retire(entry);
      if (last) return last;
    }
    return undefined;
  }

  /** Close a finished file; its unterminated last line comes back as a batch of its own: its newline can never come now. */
  async #retire({ file }: { file: TailedFile }): Promise<InboxBatch | undefined> {
    const last = file.takeUnterminated();
    await file.close();
    return last && this.#lateBatch(file, [last]);
  }

  #lateBatch(file: TailedFile, lines: InboxLine[]): InboxBatch {
    if (this.#finished.file === file.id) this.#finished = { ...file.end, modifiedNs: this.#finished.modifiedNs };
    // where reading stands stays where it is: in the file being read, or at the end of the last one finished
    const { modifiedNs: _, ...finished } = this.#finished;
    const cursor = this.#current?.mark ?? finished;
    return { file: file.id, lines, ...(cursor.file === file.id ? {} : { late: cursor }) };
  }
}
