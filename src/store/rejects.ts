// Stage 5b: `cdp.rej`: every rejected line, verbatim, after a comment with time, source and reason:
//   # seq=41 time=2026-11-24T01:13:36.125Z source=cdp.new:13 reason: ticker.interval must be > 200, got 100
//   ticker:interval:100
import { createReadStream } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { DurableFile } from "./durable.js";
import { appOfLine, parseLine } from "../lines/parse.js";
import type { Schemas } from "../schemas/schemas.js";

export const REJECTS_FILE = "cdp.rej";

/** A line cdp refused, and why. */
export interface Rejection {
  /** The line's place in the order of processed inbox lines (see the journal). */
  seq: number;
  time: string;
  /** Where the line came from, e.g. `cdp.new:13`. */
  source: string;
  /** What failed, in words an operator understands. */
  reason: string;
  /** The line as received (cut short if it was over the length limit). */
  text: string;
  /** The line's full length in bytes, when `text` was cut short. */
  fullLength?: number;
}

export function rejectionRecord(rejection: Rejection): string {
  const { seq, time, source, reason, text, fullLength } = rejection;
  const length = fullLength === undefined ? "" : ` length=${fullLength}`;
  return `# seq=${seq} time=${time} source=${oneWord(source)}${length} reason: ${oneLine(reason)}\n${text.replace(/\n/g, "\\n")}\n`;
}

/**
 * A record is two lines, a header and the text: nothing written into them may hold a newline
 * (a schema file's name may), or the next start would misread where records begin.
 */
export function oneLine(text: string): string {
  return text.replace(/[\r\n]+/g, " ");
}

function oneWord(text: string): string {
  return text.replace(/\s/g, "_");
}

/**
 * Open `cdp.rej` for appends, first dropping any record after `committedSeq`: rejections are written
 * before the journal commits their batch, so after a crash in between they are made again.
 */
export async function openRejects(path: string, committedSeq: number): Promise<DurableFile> {
  const keep = await committedLength(path, committedSeq);
  const file = await DurableFile.open(path);
  if (keep !== undefined) await file.truncateDurably(keep);
  return file;
}

/** The byte length of the records up to `committedSeq`, or undefined when nothing is to be dropped. */
async function committedLength(path: string, committedSeq: number): Promise<number | undefined> {
  let offset = 0; // of the chunk in the file
  let lineStart = 0; // file offset where the current line starts
  let header = true; // records alternate: a header line, then the verbatim line
  let head = ""; // the start of the current header line, enough to read its seq
  try {
    for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
      let from = 0;
      for (let end = chunk.indexOf(0x0a); end !== -1; from = end + 1, end = chunk.indexOf(0x0a, from)) {
        if (header) {
          head += chunk.toString("latin1", from, Math.min(end, from + 40));
          const seq = /^# seq=(\d+) /.exec(head);
          // not a header where one belongs (a record written by an older cdp with a newline in
          // it): where records begin is no longer known, and a committed record is never cut
          if (!seq) return undefined;
          if (Number(seq[1]) > committedSeq) return lineStart;
        }
        header = !header;
        head = "";
        lineStart = offset + end + 1;
      }
      if (header && head.length < 40) head += chunk.toString("latin1", from, Math.min(chunk.length, from + 40));
      offset += chunk.length;
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
  // a record cut short by a crash (no final newline) belongs to a batch that never committed
  return lineStart < offset ? lineStart : undefined;
}

/** A rejection as the sidecar serves it: the line's text only when it sets no secret and was not cut short. */
export interface ServedRejection {
  time: string;
  source: string;
  reason: string;
  text?: string;
}

export function serveRejection(rejection: Omit<Rejection, "seq">, schemas: Schemas): ServedRejection {
  const { time, source, reason, text, fullLength } = rejection;
  return fullLength === undefined && !setsSecret(text, schemas) ? { time, source, reason, text } : { time, source, reason };
}

function setsSecret(text: string, schemas: Schemas): boolean {
  const parsed = parseLine(text);
  if (parsed.kind === "error") return /:.*:/.test(text); // it may still be meant for a secret key: keep it back
  if (parsed.kind !== "change") return false;
  const info = schemas.get(parsed.app)?.key(parsed.path);
  return info === undefined || typeof info === "string" ? false : info.secret;
}

/**
 * The last `limit` rejections recorded in `cdp.rej`, newest first (read from its end), of those
 * whose line `shown` takes (given the app the line names, if any).
 */
export async function recentRejections(
  path: string,
  schemas: Schemas,
  limit: number,
  shown: (app: string | undefined) => boolean = () => true,
): Promise<ServedRejection[]> {
  let handle: FileHandle;
  try {
    handle = await open(path, "r");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw error;
  }
  try {
    const { size } = await handle.stat();
    const length = Math.min(size, TAIL_BYTES);
    const { buffer } = await handle.read(Buffer.alloc(length), 0, length, size - length);
    const lines = buffer.toString("utf8").split("\n");
    const served: ServedRejection[] = [];
    for (let i = lines.length - 2; i > 0 && served.length < limit; i--) {
      const header = /^# seq=\d+ time=(\S+) source=(\S+)(?: length=(\d+))? reason: (.*)$/.exec(lines[i - 1]!);
      if (!header) continue;
      const [, time, source, fullLength, reason] = header as unknown as [string, string, string, string | undefined, string];
      if (!shown(appOfLine(lines[i]!))) {
        i--;
        continue;
      }
      served.push(serveRejection({ time, source, reason, text: lines[i]!, fullLength: fullLength === undefined ? undefined : Number(fullLength) }, schemas));
      i--;
    }
    return served;
  } finally {
    await handle.close();
  }
}

// The end of cdp.rej that is read for the recent rejections: enough for hundreds of records.
const TAIL_BYTES = 256 << 10;
