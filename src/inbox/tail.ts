// One inbox file, read line by line from a byte offset: complete lines only, each at most the
// length limit, with the fingerprint of the bytes read (rotation.ts) and a check that the bytes
// before the offset are still the ones read (a file truncated and written again looks "grown").
import { isUtf8 } from "node:buffer";
import { createHash, type Hash } from "node:crypto";
import { fstatSync, readSync } from "node:fs";
import type { FileHandle } from "node:fs/promises";
import { fingerprint, type InboxPosition, type Resumed } from "./rotation.js";

/** One complete line of the inbox. */
export interface InboxLine {
  /** The line without "\n" and a trailing "\r"; cut to the length limit when too long. */
  text: string;
  /** 1-based line number in its file. */
  number: number;
  /** The byte offset just after this line's newline: where reading resumes after it. */
  end: number;
  /** Its length in bytes (without the newline and a trailing "\r"), when over the limit. */
  tooLong?: number;
  /** The bytes are not valid UTF-8. */
  notUtf8?: boolean;
  /** The file was replaced before this last line got its newline. */
  unterminated?: boolean;
  /** Another writer cut this line short (see CUT_SHORT): its newline never came. */
  cutShort?: boolean;
  /** On the last line of a batch: the fingerprint of the file's bytes up to `end` (see rotation.ts). */
  check?: string;
}

/** The byte `cdp push` and the sidecar write after another writer's line that lacks its newline. */
export const CUT_SHORT = 0x18; // ASCII CAN, "cancel": the bytes before it on the line are not a complete line

/**
 * A line from its bytes (at most maxLineBytes + 1 of them), its full length and its last byte, all
 * without "\n". A trailing "\r" is dropped before the length is checked.
 */
export function toInboxLine(bytes: Buffer, length: number, lastByte: number | undefined, number: number, end: number, maxLineBytes: number): InboxLine {
  const effective = lastByte === 0x0d ? length - 1 : length;
  const cut = effective > maxLineBytes;
  let content = bytes.subarray(0, cut ? maxLineBytes : effective);
  const cutShort = !cut && content[content.length - 1] === CUT_SHORT;
  if (cutShort) content = content.subarray(0, -1);
  const line: InboxLine = { text: content.toString("utf8"), number, end };
  if (cut) line.tooLong = effective;
  else if (!isUtf8(content)) line.notUtf8 = true;
  if (cutShort) line.cutShort = true;
  return line;
}

/** The lines of a whole text (for `cdp check`); a last line without "\n" counts as complete. */
export function linesOf(text: Buffer, maxLineBytes: number): InboxLine[] {
  const lines: InboxLine[] = [];
  for (let from = 0, number = 1; from < text.length; number++) {
    const newline = text.indexOf(0x0a, from);
    const end = newline === -1 ? text.length : newline;
    const bytes = text.subarray(from, Math.min(end, from + maxLineBytes + 1));
    lines.push(toInboxLine(bytes, end - from, end > from ? text[end - 1] : undefined, number, end + 1, maxLineBytes));
    from = end + 1;
  }
  return lines;
}

// A batch is at most one chunk of lines: it bounds memory and how long a stop waits for the batch in hand.
const CHUNK = 64 << 10;
/** How many of the last bytes read are compared before reading on. */
const TAIL = 256;
// Read into again and again (one file is read at a time): lines are decoded before the next read.
const buffer = Buffer.allocUnsafe(TAIL + CHUNK);

export class TailedFile {
  readonly id: string;
  readonly path: string;
  #handle: FileHandle;
  #maxLineBytes: number;
  #offset: number; // bytes read so far, complete lines and pending part
  #line: number;
  #hash: Hash; // of the bytes read so far
  #mark!: InboxPosition; // just after the last complete line
  #tail = Buffer.alloc(0); // the last bytes read
  #pending: Buffer[] = []; // the incomplete last line, at most maxLineBytes + 1 of it
  #pendingKept = 0;
  #pendingLength = 0;
  #lastByte: number | undefined;

  constructor({ file, handle, hash, offset }: Resumed, line: number, maxLineBytes: number) {
    this.id = file.id;
    this.path = file.path;
    this.#handle = handle;
    this.#maxLineBytes = maxLineBytes;
    this.#offset = offset;
    this.#line = line;
    this.#hash = hash;
    this.#restartAt(offset, line, hash);
  }

  /** Just after the last complete line read, with its fingerprint: where a restart resumes. */
  get mark(): InboxPosition {
    return this.#mark;
  }

  /** Everything read, a pending part of a line included. */
  get end(): InboxPosition {
    return { file: this.id, offset: this.#offset, line: this.#line, check: fingerprint(this.#hash) };
  }

  /** Bytes of an incomplete last line read so far. */
  get pending(): number {
    return this.#pendingLength;
  }

  stat() {
    return fstatSync(this.#handle.fd, { bigint: true });
  }

  /**
   * Not the bytes that were read any more: shorter than what was read, or as long but with other
   * bytes before the offset (truncated and written again to the very same length).
   */
  rewritten(): boolean {
    if (Number(this.stat().size) < this.#offset) return true;
    if (this.#tail.length === 0) return false;
    const before = Buffer.allocUnsafe(this.#tail.length);
    return readSync(this.#handle.fd, before, 0, before.length, this.#offset - before.length) < before.length || !before.equals(this.#tail);
  }

  /** Read it again from its start (it was truncated). */
  restart(): void {
    this.#restartAt(0, 0, createHash("sha256"));
  }

  close(): Promise<void> {
    return this.#handle.close();
  }

  /**
   * Complete lines from the next chunk; [] at the end of the file, undefined for a chunk with no
   * newline, "changed" when the bytes before the offset are no longer those read (the file was
   * truncated and written again before cdp looked: copytruncate while cdp was paused).
   */
  readLines(): InboxLine[] | undefined | "changed" {
    const fd = this.#handle.fd;
    // A synchronous read: from the page cache it takes microseconds, while a trip through
    // libuv's thread pool costs a good part of the echo->subscriber latency (npm run bench).
    // One read for the bytes before the offset (still those read?) and the new ones: a second
    // read per batch was a system call on the path of every interactive change.
    const before = this.#tail.length;
    const bytesRead = readSync(fd, buffer, 0, before + CHUNK, this.#offset - before);
    if (bytesRead <= before) return []; // nothing new (a file now shorter is found at its end: rewritten())
    if (!buffer.subarray(0, before).equals(this.#tail)) return "changed";
    const chunk = buffer.subarray(before, bytesRead);
    const start = this.#offset;
    this.#offset += chunk.length;
    this.#tail = Buffer.from(Buffer.concat([this.#tail, chunk.subarray(-TAIL)]).subarray(-TAIL));
    const lines: InboxLine[] = [];
    let from = 0;
    for (let newline = chunk.indexOf(0x0a); newline !== -1; newline = chunk.indexOf(0x0a, from)) {
      const line = this.#plainLine(chunk, from, newline, start);
      if (line) lines.push(line);
      else {
        this.#keep(chunk.subarray(from, newline));
        lines.push(this.#takeLine(start + newline + 1));
      }
      from = newline + 1;
    }
    this.#hash.update(chunk.subarray(0, from));
    const last = lines.at(-1);
    if (last) {
      last.check = fingerprint(this.#hash);
      this.#mark = { file: this.id, offset: last.end, line: last.number, check: last.check };
    }
    this.#hash.update(chunk.subarray(from));
    this.#keep(chunk.subarray(from), true); // the buffer is read into again: keep a copy
    return lines.length > 0 ? lines : undefined;
  }

  /** The incomplete last line, as a line of its own: its file is done with and its newline can never come. */
  takeUnterminated(): InboxLine | undefined {
    if (this.#pendingLength === 0) return undefined;
    const line = this.#takeLine(this.#offset);
    line.unterminated = true;
    line.check = fingerprint(this.#hash);
    this.#mark = { file: this.id, offset: line.end, line: line.number, check: line.check };
    return line;
  }

  #restartAt(offset: number, line: number, hash: Hash): void {
    this.#offset = offset;
    this.#line = line;
    this.#hash = hash;
    this.#mark = { file: this.id, offset, line, check: fingerprint(hash) };
    this.#tail = Buffer.alloc(Math.min(offset, TAIL));
    if (this.#tail.length > 0) readSync(this.#handle.fd, this.#tail, 0, this.#tail.length, offset - this.#tail.length);
    this.#resetPending();
  }

  // Keep at most maxLineBytes of a line (and a "\r" that may end it): a longer one is rejected, never buffered without bound.
  #keep(bytes: Buffer, copy = false): void {
    if (bytes.length === 0) return;
    this.#pendingLength += bytes.length;
    this.#lastByte = bytes[bytes.length - 1];
    const room = this.#maxLineBytes + 1 - this.#pendingKept;
    if (room <= 0) return;
    const kept = bytes.length > room ? bytes.subarray(0, room) : bytes;
    this.#pending.push(copy ? Buffer.from(kept) : kept);
    this.#pendingKept += kept.length;
  }

  // A line wholly in this chunk, within the limit, valid UTF-8, with no "\r" or cut-short mark:
  // decoded straight from the chunk (most lines of a burst; no Buffer view made per line).
  #plainLine(chunk: Buffer, from: number, newline: number, start: number): InboxLine | undefined {
    if (this.#pendingLength > 0 || newline - from > this.#maxLineBytes) return undefined;
    const last = chunk[newline - 1];
    if (newline > from && (last === 0x0d || last === CUT_SHORT)) return undefined;
    const text = chunk.toString("utf8", from, newline);
    if (text.includes("\uFFFD")) return undefined; // invalid UTF-8, or a U+FFFD written: looked at byte by byte
    return { text, number: ++this.#line, end: start + newline + 1 };
  }

  #takeLine(end: number): InboxLine {
    const bytes = this.#pending.length === 1 ? this.#pending[0]! : Buffer.concat(this.#pending);
    const line = toInboxLine(bytes, this.#pendingLength, this.#pendingLength > 0 ? this.#lastByte : undefined, ++this.#line, end, this.#maxLineBytes);
    this.#resetPending();
    return line;
  }

  #resetPending(): void {
    this.#pending = [];
    this.#pendingKept = 0;
    this.#pendingLength = 0;
  }
}
