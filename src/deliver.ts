// Putting a rendered file in place, as a service must see it: written beside `dest` and fsync'd
// (staged), checked there by the service's own checker, then renamed over `dest` and the directory
// fsync'd — so `dest` is always the old file or the new one, never a torn one. And the service's
// commands, run without a shell, each with a timeout, their output kept for the reason.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chown, open, readdir, readFile, rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { syncDirectory } from "./durable.js";
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
  /** What it printed (stdout and stderr, the last 2,000 characters), then how it ended: `curl: (22) … 500 (exit 22)`. */
  output: string;
}

/** Run an argv with {staged} and {dest} substituted (nothing else: a value never becomes part of a command). */
export function runCommand(argv: readonly string[], paths: { staged?: string; dest: string }, timeoutMs: number): Promise<CommandResult> {
  const words = argv.map((word) => word.replaceAll("{staged}", paths.staged ?? paths.dest).replaceAll("{dest}", paths.dest));
  return new Promise((resolve) => {
    execFile(words[0]!, words.slice(1), { timeout: timeoutMs, killSignal: "SIGKILL", maxBuffer: 1 << 20, encoding: "utf8" }, (error, stdout, stderr) => {
      const printed = `${stdout}${stderr}`.trim();
      if (!error) return resolve({ ok: true, output: printed.slice(-2000) });
      const why = error.killed ? `timed out after ${timeoutMs} ms` : typeof error.code === "number" ? `exit ${error.code}` : error.code === "ENOENT" ? `${words[0]}: not found` : error.message;
      // the command's own words first (`curl: (22) … 500`), then how it ended
      resolve({ ok: false, output: printed ? `${printed.replace(/\s+/g, " ").slice(-2000)} (${why})` : why });
    });
  });
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
