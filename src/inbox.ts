// Stage 1: tail `cdp.new`: read complete lines from the saved position, in order, across
// rotation and truncation. File-system events are only hints (chokidar throttles and drops
// them by design: chokidar issues #383 and #601), so every hint, and a periodic check, means
// "read from the saved position to the end"; the file's identity is checked on every read.
import { isUtf8 } from "node:buffer";
import { open, stat, type FileHandle } from "node:fs/promises";
import { basename, join } from "node:path";
import { watch, type FSWatcher } from "chokidar";
import type { Logger } from "pino";

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

export interface InboxOptions {
  dir: string;
  maxLineBytes: number;
  pollMs: number;
  log: Logger;
  /** The position committed in the journal, if any. */
  resumeAt: InboxPosition | undefined;
}

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

export class Inbox {
  readonly path: string;
  #options: InboxOptions;
  #watcher: FSWatcher | undefined;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  #hinted = false;
  #wake: (() => void) | undefined;

  #handle: FileHandle | undefined;
  #file = "";
  #offset = 0; // bytes read so far, complete lines and pending part
  #line = 0;
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
    const { dir, log, pollMs } = this.#options;
    const watcher = watch(dir, { depth: 0, ignoreInitial: true, ignored: (path) => path !== dir && basename(path) !== INBOX_FILE });
    this.#watcher = watcher;
    // `raw` is fs.watch unthrottled: chokidar's own `change` drops quick successive appends
    watcher.on("raw", (_event, path) => {
      if (!path || basename(path) === INBOX_FILE) this.#hint();
    });
    watcher.on("all", () => this.#hint());
    watcher.on("error", (error) => log.error({ err: error }, "watching the inbox failed; the periodic check goes on"));
    await new Promise<void>((resolve) => watcher.once("ready", resolve));
    this.#timer = setInterval(() => this.#hint(), pollMs);
  }

  /** Batches of complete lines, in order, until `close()`. */
  async *batches(): AsyncGenerator<InboxBatch> {
    try {
      while (!this.#closed) {
        this.#hinted = false; // the read below covers everything up to now
        const batch = await this.#read();
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
    this.#hint();
    clearInterval(this.#timer);
    await this.#watcher?.close();
  }

  #hint(): void {
    this.#hinted = true;
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  async #read(): Promise<InboxBatch | undefined> {
    try {
      for (;;) {
        if (!this.#handle && !(await this.#openCurrent())) return undefined;
        const lines = await this.#readLines();
        if (lines === undefined) continue; // only part of a line so far: read on
        if (lines.length > 0) return { file: this.#file, lines };
        if (this.#pendingLength > 0) this.#options.log.debug({ line: this.#line + 1, bytes: this.#pendingLength }, "waiting for the rest of a line");
        const end = await this.#atEnd();
        if (end === "idle") return undefined;
        if (end !== "read on") return end;
      }
    } catch (error) {
      this.#options.log.warn({ err: error, path: this.path }, "cannot read the inbox; retrying");
      await this.#handle?.close().catch(() => undefined);
      this.#handle = undefined;
      return undefined;
    }
  }

  /** Open cdp.new if it exists; resume at the journal's position only if it is the same file. */
  async #openCurrent(): Promise<boolean> {
    let handle: FileHandle;
    try {
      handle = await open(this.path, "r");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return false;
      throw error;
    }
    const { id, size } = await identify(handle);
    const resume = this.#resumeAt;
    this.#resumeAt = undefined;
    this.#handle = handle;
    this.#file = id;
    this.#resetPending();
    if (resume && resume.file === id && resume.offset <= size) {
      this.#offset = resume.offset;
      this.#line = resume.line;
    } else {
      if (resume) this.#options.log.warn({ path: this.path }, "the inbox is not the file cdp last read; reading it from the start");
      this.#offset = 0;
      this.#line = 0;
    }
    return true;
  }

  /** Complete lines from the next chunk; [] at the end of the file, undefined for a chunk with no newline. */
  async #readLines(): Promise<InboxLine[] | undefined> {
    const buffer = Buffer.allocUnsafe(CHUNK);
    const { bytesRead } = await this.#handle!.read(buffer, 0, CHUNK, this.#offset);
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
    this.#keep(chunk.subarray(from));
    return lines.length > 0 ? lines : undefined;
  }

  // Keep at most maxLineBytes of a line: a longer one is rejected, never buffered without bound.
  #keep(bytes: Buffer): void {
    this.#pendingLength += bytes.length;
    const room = this.#options.maxLineBytes - this.#pendingKept;
    if (room <= 0 || bytes.length === 0) return;
    const kept = bytes.length > room ? bytes.subarray(0, room) : bytes;
    this.#pending.push(Buffer.from(kept));
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
    let now: string | undefined;
    try {
      const info = await stat(this.path, { bigint: true });
      now = `${info.ino}-${info.birthtimeNs}`;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    }
    if (now === this.#file) {
      if ((await identify(this.#handle!)).size >= this.#offset) return "idle";
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
