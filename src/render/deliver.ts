// Putting a rendered file in place, as a service must see it: written beside `dest` and fsync'd
// (staged), checked there by the service's own checker, then renamed over `dest` and the directory
// fsync'd — so `dest` is always the old file or the new one, never a torn one. And the service's
// commands, run without a shell, each with a timeout, their output kept for the reason.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chown, open, readdir, readFile, rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { syncDirectory } from "../store/durable.js";
import type { RenderTarget } from "./targets.js";

/** What `dest` holds now (undefined: nothing readable). */
export function currentText(dest: string): Promise<string | undefined> {
  return readFile(dest, "utf8").catch(() => undefined);
}

const stagedPrefix = (dest: string) => `.${basename(dest)}.cdp-`;

/** Write `text` beside `dest`, with the target's mode and owner, and fsync it: the staged file's path. */
export async function stage(target: RenderTarget, text: string): Promise<string> {
  const staged = join(dirname(target.dest), `${stagedPrefix(target.dest)}${randomBytes(4).toString("hex")}`);
  const file = await open(staged, "wx", target.mode);
  try {
    await file.writeFile(text);
    await file.chmod(target.mode); // whatever the umask
    if (target.owner) await chown(staged, target.owner.uid, target.owner.gid);
    await file.sync();
  } catch (error) {
    await file.close();
    await rm(staged, { force: true });
    throw error;
  }
  await file.close();
  return staged;
}

/** Rename the staged file over `dest`, durably. */
export async function install(staged: string, dest: string): Promise<void> {
  await rename(staged, dest);
  await syncDirectory(dirname(dest));
}

export function discard(staged: string): Promise<void> {
  return rm(staged, { force: true });
}

/** Staged files of `dest` that a crash left behind. */
export async function removeStaged(dest: string): Promise<void> {
  const names = await readdir(dirname(dest)).catch(() => []);
  await Promise.all(names.filter((name) => name.startsWith(stagedPrefix(dest))).map((name) => discard(join(dirname(dest), name))));
}

export interface CommandResult {
  ok: boolean;
  /** What it printed (stdout and stderr, the last 2,000 characters, control bytes dropped), then how it ended: `curl: (22) … 500 (exit 22)`. */
  output: string;
}

/** How much of a command's output is kept while it runs: the end of it (the reason is at the end). */
const KEPT_BYTES = 16 << 10;
const SHOWN_CHARS = 2000;

/**
 * Run an argv with {staged} and {dest} substituted (nothing else: a value never becomes part of a
 * command), in a process group of its own: a timeout ends the group, so a `sh -c 'sleep 1000'`
 * leaves no child behind. Only the end of its output is kept, however much it prints.
 */
export function runCommand(argv: readonly string[], paths: { staged?: string; dest: string }, timeoutMs: number): Promise<CommandResult> {
  const words = argv.map((word) => word.replaceAll("{staged}", paths.staged ?? paths.dest).replaceAll("{dest}", paths.dest));
  return new Promise((resolve) => {
    const child = spawn(words[0]!, words.slice(1), { detached: true, stdio: ["ignore", "pipe", "pipe"] });
    let kept = Buffer.alloc(0);
    const keep = (chunk: Buffer) => {
      kept = Buffer.concat([kept, chunk]);
      if (kept.length > KEPT_BYTES) kept = kept.subarray(kept.length - KEPT_BYTES);
    };
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    let timedOut = false;
    const endGroup = () => {
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {
        // the group is gone already
      }
    };
    const timer = setTimeout(() => {
      timedOut = true;
      endGroup();
    }, timeoutMs);
    let failed: NodeJS.ErrnoException | undefined;
    let ended: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    const finish = () => {
      clearTimeout(timer);
      const printed = printable(kept.toString("utf8"));
      if (!failed && !timedOut && ended?.code === 0) return resolve({ ok: true, output: printed.slice(-SHOWN_CHARS) });
      const why = timedOut
        ? `timed out after ${timeoutMs} ms`
        : failed
          ? failed.code === "ENOENT"
            ? `${words[0]}: not found`
            : failed.message
          : ended?.code !== null
            ? `exit ${ended?.code}`
            : `killed by ${ended.signal}`;
      // the command's own words first (`curl: (22) … 500`), then how it ended
      resolve({ ok: false, output: printed ? `${printed.slice(-SHOWN_CHARS)} (${why})` : why });
    };
    child.on("error", (error: NodeJS.ErrnoException) => {
      failed = error;
      if (child.pid === undefined) finish(); // it never started
    });
    child.on("exit", (code, signal) => {
      ended = { code, signal };
      // what it left running in the background may hold its output open: read on a moment, no longer
      const drained = setTimeout(() => {
        child.stdout.destroy();
        child.stderr.destroy();
        finish();
      }, 500);
      child.on("close", () => {
        clearTimeout(drained);
        finish();
      });
    });
  });
}

/** Text fit for a reason on one line: control bytes (NULs, escapes) dropped, white space folded. */
function printable(text: string): string {
  return text
    .replace(/\u001b\[[0-9;?]*[A-Za-z]/g, "")
    .replace(/[\u0000-\u0008\u000e-\u001f\u007f-\u009f\ufffd]/g, "")
    .replace(/\s+/g, " ")
    .trim();
}

/** After the target's delay, run the health command until it succeeds or `timeoutMs` passes (every 250 ms); the last result. */
export async function healthy(target: RenderTarget, timeoutMs: number): Promise<CommandResult> {
  await new Promise((resolve) => setTimeout(resolve, target.healthDelayMs));
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    // the last probe may run past the deadline by up to a second: its answer is the reason
    const result = await runCommand(target.health!, { dest: target.dest }, Math.min(target.commandTimeoutMs, Math.max(1000, deadline - Date.now())));
    if (result.ok || Date.now() >= deadline) return result;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}
