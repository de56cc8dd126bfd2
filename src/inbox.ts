// Stage 1: tail `cdp.new`: read complete lines from the saved position, in order, across
// rotation and truncation. File-system events are only hints (chokidar throttles and drops
// them by design: chokidar issues #383 and #601), so every hint, and a periodic check, means
// "read from the saved position to the end"; the file's identity is checked on every read.
import { isUtf8 } from "node:buffer";
import { fstatSync, readSync, statSync, watch as fsWatch } from "node:fs";
import { open, readdir, stat, type FileHandle } from "node:fs/promises";
import { basename, join } from "node:path";
import { watch, type FSWatcher } from "chokidar";
import type { Logger } from "pino";
import { CdpError } from "./errors.js";

export const INBOX_FILE = "cdp.new";

/** Where reading stands: the file (by identity, not name), the byte offset and the last line number. */
export interface InboxPosition {
  file: string;
  offset: number;
  line: number;
}

/** One complete line of the inbox. */
export interface InboxLine {
  /** The line without "\n" and a trailing "\r"; cut to the length limit when too long. */
  text: string;
  /** 1-based line number in its file. */
  number: number;
  /** The byte offset just after this line's newline: where reading resumes after it. */
  end: number;
  /** Its length in bytes (without the newline), when over the limit. */
  tooLong?: number;
  /** The bytes are not valid UTF-8. */
  notUtf8?: boolean;
  /** The file was replaced before this last line got its newline. */
  unterminated?: boolean;
}

export interface InboxBatch {
  file: string;
  lines: InboxLine[];
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
}

/** While the inbox is unavailable, it is tried again this often. */
const RETRY_MS = 1000;

// A batch is at most one chunk of lines: it bounds memory and how long a stop waits for the batch in hand.
const CHUNK = 256 << 10;

/** A line from its bytes (at most maxLineBytes of them) and its full length, both without "\n". */
export function toInboxLine(bytes: Buffer, length: number, number: number, end: number, maxLineBytes: number): InboxLine {
  const cut = length > maxLineBytes;
  const content = !cut && bytes[bytes.length - 1] === 0x0d ? bytes.subarray(0, -1) : bytes;
  const line: InboxLine = { text: content.toString("utf8"), number, end };
  if (cut) line.tooLong = length;
  else if (!isUtf8(content)) line.notUtf8 = true;
  return line;
}

/** The lines of a whole text (for `cdp check`); a last line without "\n" counts as complete. */
export function linesOf(text: Buffer, maxLineBytes: number): InboxLine[] {
  const lines: InboxLine[] = [];
  for (let from = 0, number = 1; from < text.length; number++) {
    const newline = text.indexOf(0x0a, from);
    const end = newline === -1 ? text.length : newline;
    const bytes = text.subarray(from, Math.min(end, from + maxLineBytes));
    lines.push(toInboxLine(bytes, end - from, number, end + 1, maxLineBytes));
    from = end + 1;
  }
  return lines;
}

/** Identity of a file that survives renames: inode plus birth time (an inode number can be reused). */
async function identify(handle: FileHandle): Promise<{ id: string; size: number }> {
  const info = await handle.stat({ bigint: true });
  return { id: `${info.ino}-${info.birthtimeNs}`, size: Number(info.size) };
}

interface OpenFile {
  path: string;
  handle: FileHandle;
  id: string;
  size: number;
}

async function openIfPresent(path: string): Promise<OpenFile | undefined> {
  let handle: FileHandle;
  try {
    handle = await open(path, "r");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
  return { path, handle, ...(await identify(handle)) };
}

export class Inbox {
  readonly path: string;
  #options: InboxOptions;
  #watcher: FSWatcher | undefined;
  #appends: ReturnType<typeof fsWatch> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  #hinted = false;
  #outageSince: number | undefined;
  #outages: number[] = []; // start times of recent outages
  #outageCount = 0;
  #failure: CdpError | undefined;
  #wake: (() => void) | undefined;
  #whenClosed: (() => void) | undefined;

  #handle: FileHandle | undefined;
  #file = "";
  #offset = 0; // bytes read so far, complete lines and pending part
  #line = 0;
  #buffer = Buffer.allocUnsafe(CHUNK); // read into again and again: lines are decoded before the next read
  #pending: Buffer[] = []; // the incomplete last line, at most maxLineBytes of it
  #pendingKept = 0;
  #pendingLength = 0;
  #resumeAt: InboxPosition | undefined;

  constructor(options: InboxOptions) {
    this.#options = options;
    this.path = join(options.dir, INBOX_FILE);
    this.#resumeAt = options.resumeAt;
  }

  /** Start watching; resolves once the watch is in place. */
  async start(): Promise<void> {
    if (this.#options.watchEvents) await this.#watch();
    this.#timer = setInterval(() => this.#hint(), this.#options.pollIntervalMs);
  }

  async #watch(): Promise<void> {
    const { dir, log } = this.#options;
    await this.#watcher?.close();
    const watcher = watch(dir, { depth: 0, ignoreInitial: true, ignored: (path) => path !== dir && basename(path) !== INBOX_FILE });
    this.#watcher = watcher;
    // chokidar's own `change` drops quick successive appends; its `raw` events are fs.watch
    // unthrottled, but come after its own bookkeeping for the event, so the append signal is
    // taken from a plain fs.watch of the directory (about 0.1 ms sooner: npm run bench)
    this.#appends?.close();
    try {
      this.#appends = fsWatch(dir, (_event, name) => {
        if (!name || name === INBOX_FILE) this.#hint();
      });
      this.#appends.on("error", () => this.#hint());
    } catch (error) {
      log.error({ err: error }, "watching the inbox failed; the periodic check goes on");
    }
    watcher.on("raw", (_event, path) => {
      if (!path || basename(path) === INBOX_FILE) this.#hint();
    });
    watcher.on("all", () => this.#hint());
    watcher.on("error", (error) => log.error({ err: error }, "watching the inbox failed; the periodic check goes on"));
    // the directory may vanish before chokidar is ready: then it never is, and close() must not wait on it
    await new Promise<void>((resolve) => {
      watcher.once("ready", resolve);
      watcher.once("error", () => resolve());
      this.#whenClosed = resolve;
    });
  }

  /** Batches of complete lines, in order, until `close()`. */
  async *batches(): AsyncGenerator<InboxBatch> {
    try {
      while (!this.#closed) {
        this.#hinted = false; // the read below covers everything up to now
        const batch = await this.#read();
        if (this.#failure) throw this.#failure;
        if (batch) {
          yield batch;
          continue;
        }
        if (!this.#hinted && !this.#closed) await new Promise<void>((resolve) => (this.#wake = resolve));
      }
    } finally {
      await this.#handle?.close();
      this.#handle = undefined;
    }
  }

  /** Stop watching; `batches()` ends after the batch in hand. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#whenClosed?.();
    this.#hint();
    clearInterval(this.#timer);
    this.#appends?.close();
    await this.#watcher?.close();
  }

  /** Why the inbox cannot be read right now, or undefined while it can. */
  get unavailable(): string | undefined {
    return this.#outageSince === undefined ? undefined : `the inbox ${this.path} has been unavailable since ${new Date(this.#outageSince).toISOString()}`;
  }

  /** How many outages there were since start. */
  get outages(): number {
    return this.#outageCount;
  }

  #hint(): void {
    this.#hinted = true;
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  async #read(): Promise<InboxBatch | undefined> {
    try {
      const batch = await this.#readAvailable();
      if (this.#outageSince !== undefined) await this.#recovered();
      return batch;
    } catch (error) {
      await this.#handle?.close().catch(() => undefined);
      this.#handle = undefined;
      this.#unavailable(error as NodeJS.ErrnoException);
      return undefined;
    }
  }

  async #readAvailable(): Promise<InboxBatch | undefined> {
    for (;;) {
      if (!this.#handle && !(await this.#openCurrent())) {
        await stat(this.#options.dir); // a missing file is normal, a missing directory an outage
        return undefined;
      }
      const lines = await this.#readLines();
      if (lines === undefined) continue; // only part of a line so far: read on
      if (lines.length > 0) return { file: this.#file, lines };
      if (this.#pendingLength > 0) this.#options.log.debug({ line: this.#line + 1, bytes: this.#pendingLength }, "waiting for the rest of a line");
      const end = await this.#atEnd();
      if (end === "idle") return undefined;
      if (end !== "read on") return end;
    }
  }

  /**
   * The inbox cannot be read: try again each second; past the supervision limits, stop so that a
   * supervisor restarts cdp (exit 3).
   */
  #unavailable(error: NodeJS.ErrnoException): void {
    const { log, maxOutageMs, maxOutages, outageWindowMs } = this.#options;
    const now = Date.now();
    if (this.#outageSince === undefined) {
      this.#outageSince = now;
      this.#outages = [...this.#outages.filter((start) => now - start < outageWindowMs), now];
      this.#outageCount++;
      log.warn({ err: error, path: this.path, outages: this.#outages.length }, "the inbox is unavailable; retrying each second");
    }
    const cause = `${error.code ?? "error"}: ${error.message}`;
    if (this.#outages.length > maxOutages) {
      this.#failure = new CdpError("inbox", `the inbox ${this.path} was unavailable ${this.#outages.length} times within ${outageWindowMs / 1000} s (${cause})`);
    } else if (now - this.#outageSince > maxOutageMs) {
      this.#failure = new CdpError("inbox", `the inbox ${this.path} has been unavailable for more than ${maxOutageMs / 1000} s (${cause})`);
    }
    setTimeout(() => this.#hint(), RETRY_MS).unref();
  }

  async #recovered(): Promise<void> {
    this.#options.log.info({ path: this.path, seconds: (Date.now() - this.#outageSince!) / 1000 }, "the inbox is available again");
    this.#outageSince = undefined;
    if (this.#options.watchEvents) await this.#watch(); // the old watch may have died with the directory
  }

  /**
   * Open cdp.new if it exists. At start, resume at the journal's position only in the very file
   * it names (by identity): if cdp.new was rotated while cdp was down, the rest of the old file,
   * when it is still in the directory, is read first.
   */
  async #openCurrent(): Promise<boolean> {
    const resume = this.#resumeAt;
    this.#resumeAt = undefined;
    const current = await openIfPresent(this.path);
    if (resume && current?.id !== resume.file) {
      const rotated = await this.#findRotated(resume.file);
      if (rotated && rotated.size >= resume.offset) {
        await current?.handle.close();
        this.#options.log.info({ path: rotated.path }, "the inbox was rotated while cdp was stopped; reading the rest of the old file first");
        return this.#use(rotated, resume);
      }
    }
    if (!current) return false;
    if (resume && (current.id !== resume.file || current.size < resume.offset)) {
      this.#options.log.warn({ path: this.path }, "the inbox is not the file cdp last read (or is shorter); reading it from the start");
    }
    return this.#use(current, resume);
  }

  #use(file: OpenFile, resume: InboxPosition | undefined): true {
    const resumable = resume !== undefined && resume.file === file.id && resume.offset <= file.size;
    this.#handle = file.handle;
    this.#file = file.id;
    this.#offset = resumable ? resume.offset : 0;
    this.#line = resumable ? resume.line : 0;
    this.#resetPending();
    return true;
  }

  /** A file in the data directory with this identity (cdp.new renamed by a log rotator). */
  async #findRotated(id: string): Promise<OpenFile | undefined> {
    for (const name of await readdir(this.#options.dir)) {
      if (name === INBOX_FILE || !name.startsWith(INBOX_FILE)) continue;
      const path = join(this.#options.dir, name);
      const info = await stat(path, { bigint: true }).catch(() => undefined);
      if (!info?.isFile() || `${info.ino}-${info.birthtimeNs}` !== id) continue;
      const file = await openIfPresent(path).catch(() => undefined);
      if (file?.id === id) return file;
      await file?.handle.close();
    }
    return undefined;
  }

  /** Complete lines from the next chunk; [] at the end of the file, undefined for a chunk with no newline. */
  async #readLines(): Promise<InboxLine[] | undefined> {
    const buffer = this.#buffer;
    // A synchronous read: from the page cache it takes microseconds, while a trip through
    // libuv's thread pool costs a good part of the echo->subscriber latency (npm run bench).
    const bytesRead = readSync(this.#handle!.fd, buffer, 0, CHUNK, this.#offset);
    if (bytesRead === 0) return [];
    const chunk = buffer.subarray(0, bytesRead);
    const start = this.#offset;
    this.#offset += bytesRead;
    const lines: InboxLine[] = [];
    let from = 0;
    for (let newline = chunk.indexOf(0x0a); newline !== -1; newline = chunk.indexOf(0x0a, from)) {
      this.#keep(chunk.subarray(from, newline));
      lines.push(this.#takeLine(start + newline + 1));
      from = newline + 1;
    }
    this.#keep(chunk.subarray(from), true); // the buffer is read into again: keep a copy
    return lines.length > 0 ? lines : undefined;
  }

  // Keep at most maxLineBytes of a line: a longer one is rejected, never buffered without bound.
  #keep(bytes: Buffer, copy = false): void {
    this.#pendingLength += bytes.length;
    const room = this.#options.maxLineBytes - this.#pendingKept;
    if (room <= 0 || bytes.length === 0) return;
    const kept = bytes.length > room ? bytes.subarray(0, room) : bytes;
    this.#pending.push(copy ? Buffer.from(kept) : kept);
    this.#pendingKept += kept.length;
  }

  #takeLine(end: number, unterminated = false): InboxLine {
    const bytes = this.#pending.length === 1 ? this.#pending[0]! : Buffer.concat(this.#pending);
    const line = toInboxLine(bytes, this.#pendingLength, ++this.#line, end, this.#options.maxLineBytes);
    if (unterminated) line.unterminated = true;
    this.#resetPending();
    return line;
  }

  #resetPending(): void {
    this.#pending = [];
    this.#pendingKept = 0;
    this.#pendingLength = 0;
  }

  /**
   * At the end of the file: has cdp.new been replaced, deleted or truncated since it was opened?
   * A replaced file's unterminated last line comes back as a batch of its own: its newline can
   * never arrive now. Then the next read opens the new file from its start.
   */
  async #atEnd(): Promise<"idle" | "read on" | InboxBatch> {
    // Synchronous stats (microseconds): this check follows every read, and two thread-pool trips
    // here delayed the next line's read by a good part of a millisecond (npm run bench).
    const info = statSync(this.path, { bigint: true, throwIfNoEntry: false });
    const now = info && `${info.ino}-${info.birthtimeNs}`;
    if (now === this.#file) {
      if (Number(fstatSync(this.#handle!.fd).size) >= this.#offset) return "idle";
      this.#options.log.warn({ path: this.path }, "the inbox was truncated; reading it from the start");
      this.#offset = 0;
      this.#line = 0;
      this.#resetPending();
      return "read on";
    }
    const last = this.#pendingLength > 0 ? this.#takeLine(this.#offset, true) : undefined;
    const file = this.#file;
    await this.#handle!.close();
    this.#handle = undefined;
    this.#options.log.info({ path: this.path }, now ? "the inbox was replaced; reading the new file" : "the inbox was removed");
    return last ? { file, lines: [last] } : "read on";
  }
}
