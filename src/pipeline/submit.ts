// Lines from `cdp push` and the sidecar take the operators' path: one append to cdp.new, as
// `echo >>` does, so they are ordered, journaled and recovered like any other line. For the
// sidecar a comment line with a fresh id goes first, in the same write; the lines that follow it
// in the inbox are the caller's, and their outcomes are reported once their batch is durable.
import { randomUUID } from "node:crypto";
import { constants } from "node:fs";
import { open, readFile, stat, type FileHandle } from "node:fs/promises";
import { userInfo } from "node:os";
import { join } from "node:path";
import { takeDirectoryOwner } from "../store/durable.js";
import { CdpError } from "../errors.js";
import { CUT_SHORT, INBOX_FILE } from "../inbox/inbox.js";
import { identityOf, notRegular } from "../inbox/rotation.js";
import type { LineOutcome, Pipeline } from "../types.js";
import { takenBackAt } from "./receipts.js";

export interface LineResult {
  /** The line's number in what was submitted (1-based). */
  line: number;
  /** "taken back": accepted, then refused by the service its app's config is rendered for. */
  outcome: LineOutcome["outcome"] | "taken back";
  revision?: number;
  reason?: string;
  /** For "taken back": the revision that took it back. */
  takenBackAt?: number;
}

export interface Submitted {
  /** processed: every line has its outcome; queued: they are in the inbox but were not all processed in time. */
  status: "processed" | "queued";
  lines: LineResult[];
}

/** Who runs this command, for `# by:` (the user behind sudo, where there is one). */
export function invokingUser(): string {
  return process.env.SUDO_USER || userInfo().username;
}

/**
 * Append `text` (complete lines) to the inbox, each line after `# by:` (and `# reason:`)
 * comments, and wait up to `waitMs` for each line's outcome.
 */
export async function submitLines(pipeline: Pipeline, text: string, waitMs: number, from: string, said: { by: string; reason?: string }): Promise<Submitted> {
  const given = (text.endsWith("\n") ? text.slice(0, -1) : text).split("\n");
  const count = given.length;
  const marker = `# from ${from.replace(/\s+/g, "_")} id=${randomUUID()}`;
  const directives = [`# by: ${said.by.replace(/\s+/g, "_")}`, ...(said.reason ? [`# reason: ${said.reason.replace(/[\r\n]+/g, " ")}`] : [])];
  const body = `${given.map((line) => [...directives, line].join("\n")).join("\n")}\n`;
  const results: LineResult[] = [];
  let skip = 0; // our directives before the next given line
  let found = false;
  let done!: () => void;
  const complete = new Promise<void>((resolve) => (done = resolve));
  const take = (_file: string, lines: LineOutcome[]) => {
    for (const line of lines) {
      if (results.length === count) return;
      if (!found) {
        found = line.text.includes(marker);
        skip = directives.length;
        continue;
      }
      if (skip > 0) {
        skip--;
        continue;
      }
      skip = directives.length;
      const { outcome, revision, reason } = line;
      const result: (typeof results)[number] = { line: results.length + 1, outcome };
      if (revision !== undefined) result.revision = revision;
      if (reason !== undefined) result.reason = reason;
      results.push(result);
      if (results.length === count) done();
    }
  };
  pipeline.events.on("lines", take);
  let timer: NodeJS.Timeout | undefined;
  const deadline = Date.now() + waitMs;
  try {
    await appendToInbox(pipeline.dir, `${marker}\n${body}`);
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, waitMs)));
    await Promise.race([complete, timeout]);
  } finally {
    clearTimeout(timer);
    pipeline.events.off("lines", take);
  }
  if (results.length < count) return { status: "queued", lines: results };
  return { status: "processed", lines: await withVerdicts(pipeline, given, results, deadline) };
}

/** Accepted lines of apps rendered for a service wait for its verdict: "taken back" when it refused them. */
async function withVerdicts(pipeline: Pipeline, given: string[], results: LineResult[], deadline: number): Promise<LineResult[]> {
  const judged: LineResult[] = [];
  for (const result of results) {
    if (result.outcome !== "accepted") {
      judged.push(result);
      continue;
    }
    const text = given[result.line - 1]!;
    const verdicts = await pipeline.renderVerdicts(text.split(":", 1)[0]!, result.revision!, Math.max(0, deadline - Date.now()));
    const back = verdicts && takenBackAt(verdicts, text, result.revision!);
    judged.push(back ? { ...result, outcome: "taken back", takenBackAt: back.at, reason: back.reason } : result);
  }
  return judged;
}

/**
 * A user other than the data directory's owner (not root) would create cdp.new as its own, mode
 * 0600: the watcher, running as the owner, could not read it and would stop (exit 3).
 */
async function refuseUnreadableInbox(dir: string, path: string): Promise<void> {
  const uid = process.getuid?.();
  if (uid === undefined || uid === 0) return;
  const info = await stat(dir).catch(() => undefined);
  if (!info || info.uid === uid) return;
  if (
    await stat(path).then(
      () => true,
      () => false,
    )
  )
    return;
  throw new CdpError(
    "usage",
    `cdp push as ${invokingUser()} would create ${path} that the watcher, running as ${await ownerOf(dir)} (the data directory's owner), could not read: run it as ${await ownerOf(dir)} (sudo -u ${await ownerOf(dir)} cdp push …), or as root`,
  );
}

/** The name of a directory's owner (its uid where it has none). */
async function ownerOf(dir: string): Promise<string> {
  const uid = (await stat(dir).catch(() => undefined))?.uid;
  if (uid === undefined) return "?";
  const entry = (await readFile("/etc/passwd", "utf8").catch(() => "")).split("\n").find((line) => line.split(":")[2] === String(uid));
  return entry?.split(":")[0] ?? String(uid);
}

/**
 * Append complete lines to the inbox in one write(2) in append mode: never interleaved with other
 * writers. Never through a symbolic link or into a FIFO. When the inbox ends in another writer's
 * line without its newline, that fragment is cut short first (CUT_SHORT and a newline): it is
 * rejected as incomplete rather than glued to the first line written here.
 */
export async function appendToInbox(dir: string, text: string, locate = false): Promise<Landed | undefined> {
  const path = join(dir, INBOX_FILE);
  await refuseUnreadableInbox(dir, path);
  let inbox: FileHandle;
  try {
    inbox = await open(path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW | constants.O_NONBLOCK, 0o600);
    await takeDirectoryOwner(inbox, dir); // root's push beside a watcher that runs as its service user
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "EACCES" || code === "EPERM")
      throw new CdpError("usage", `${invokingUser()} may not write ${path}: run cdp push as the data directory's owner (${await ownerOf(dir)}), or as root`);
    if (code === "ELOOP") throw new CdpError("bootstrap", `${path} is a symbolic link (cdp never writes through links): remove it`);
    if (code === "ENXIO") throw new CdpError("bootstrap", `${path} is a FIFO: remove it; the inbox must be a regular file`);
    if (code === "EISDIR") throw new CdpError("bootstrap", `${path} is a directory: remove it; the inbox must be a regular file`);
    throw error;
  }
  try {
    const info = await inbox.stat();
    const why = notRegular(
      { isFile: () => info.isFile(), isSymbolicLink: () => false, isFIFO: () => info.isFIFO(), isDirectory: () => info.isDirectory() },
      path,
    );
    if (why) throw new CdpError("bootstrap", why);
    let cut = "";
    if (info.size > 0) {
      const last = Buffer.alloc(1);
      const reader = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
      try {
        await reader.read(last, 0, 1, info.size - 1);
      } finally {
        await reader.close();
      }
      if (last[0] !== 0x0a) cut = `${String.fromCharCode(CUT_SHORT)}\n`;
    }
    const bytes = Buffer.from(`${cut}${text}`);
    await inbox.write(bytes);
    // finding where the lines landed reads the inbox: only for those who ask (cdp push), not on every POST
    return locate ? await landed(inbox, bytes, cut.length) : undefined;
  } finally {
    await inbox.close();
  }
}

/** Where appended bytes landed: the inbox file (its identity) and the offset just after the write. */
export interface Landed {
  file: string;
  end: number;
  /** How many lines the file holds before the appended text (its first line is this + 1). */
  linesBefore: number;
}

// Other writers may have appended after us already: find our bytes (they hold a fresh id) near the end.
async function landed(inbox: FileHandle, bytes: Buffer, prefix: number): Promise<Landed | undefined> {
  const info = await inbox.stat({ bigint: true });
  const size = Number(info.size);
  const whole = Buffer.alloc(size);
  const reader = await open(`/proc/self/fd/${inbox.fd}`, "r").catch(() => undefined); // the file we wrote, even if renamed since
  if (!reader) return undefined;
  try {
    await reader.read(whole, 0, size, 0);
  } finally {
    await reader.close();
  }
  const at = whole.lastIndexOf(bytes);
  if (at === -1) return undefined;
  let linesBefore = 0;
  for (let newline = whole.indexOf(0x0a); newline !== -1 && newline < at + prefix; newline = whole.indexOf(0x0a, newline + 1)) linesBefore++;
  return { file: identityOf(info), end: at + bytes.length, linesBefore };
}
