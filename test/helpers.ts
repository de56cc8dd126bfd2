// Shared by the tests: temp data dirs with the fixture schemas, and the real `cdp` process.
import { spawn, type ChildProcess } from "node:child_process";
import http from "node:http";
import { existsSync } from "node:fs";
import { appendFile, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Writable } from "node:stream";
import { pino, type Logger } from "pino";
import { afterEach } from "vitest";
import { initDataDir, SETTINGS_FILE } from "../src/store/datadir.js";

export const SCHEMAS = fileURLToPath(new URL("./fixtures/schemas", import.meta.url));
export const CLI = fileURLToPath(new URL("../dist/src/cli.js", import.meta.url));

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  await Promise.allSettled(cleanups.splice(0).map((cleanup) => cleanup()));
});

/** Run `cleanup` after the test, pass or fail. */
export function afterThisTest(cleanup: () => Promise<unknown>): void {
  cleanups.push(cleanup);
}

/** A fresh directory, removed after the test. */
export async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "cdp-test-"));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A fresh, initialised data directory (as `cdp init --dir D --schemas SCHEMAS`), removed after the test. */
export async function dataDir(schemas = SCHEMAS): Promise<string> {
  const dir = await tempDir();
  await initDataDir(dir, schemas);
  return dir;
}

/** The text of a file, or "" when it does not exist yet. */
export async function readText(path: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return "";
    throw error;
  }
}

/** The change lines of a journal or the verbatim lines of cdp.rej (metadata comments left out). */
export async function recordLines(path: string): Promise<string[]> {
  return (await readText(path)).split("\n").filter((line) => line !== "" && !line.startsWith("#"));
}

export interface Running {
  child: ChildProcess;
  output: () => string;
  /** What it wrote to stdout alone. */
  stdout: () => string;
  exited: Promise<number | null>;
}

/** Start the real `cdp` command; it is killed after the test if still running. */
export function runCdp(args: string[], options: { stdin?: string; uid?: number; gid?: number; env?: Record<string, string> } = {}): Running {
  const as = options.uid === undefined ? {} : { uid: options.uid, gid: options.gid ?? options.uid };
  const env = options.env ? { env: { ...process.env, ...options.env } } : {};
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ["pipe", "pipe", "pipe"], ...as, ...env });
  let output = "";
  let stdout = "";
  child.stdout!.on("data", (data: Buffer) => {
    output += data.toString();
    stdout += data.toString();
  });
  child.stderr!.on("data", (data: Buffer) => (output += data.toString()));
  child.stdin!.end(options.stdin ?? "");
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    await exited;
  });
  return { child, output: () => output, stdout: () => stdout, exited };
}

/** Run `cdp` to completion; resolves to its exit code and output. */
export async function cdp(args: string[], stdin?: string): Promise<{ code: number | null; output: string }> {
  const running = runCdp(args, { stdin });
  const code = await running.exited;
  return { code, output: running.output() };
}

/** What `cdp get` prints for all apps, an app or a key (parsed JSON); the command must succeed. */
export async function getConfig(dir: string, selector?: string, schemas = SCHEMAS): Promise<unknown> {
  const running = runCdp(["get", "--dir", dir, "--schemas", schemas, ...(selector ? [selector] : [])]);
  const code = await running.exited;
  if (code !== 0) throw new Error(`cdp get exited ${code}:\n${running.output()}`);
  return JSON.parse(running.stdout()) as unknown; // stderr may say that a value is staged by a rollout
}

/** The change lines of a data directory's journal. */
export const journalOf = (dir: string) => recordLines(join(dir, "cdp"));

/** Start `cdp watch` on `dir` and wait until it says it is watching. */
export async function startWatch(dir: string, extra: string[] = []): Promise<Running> {
  // a watcher runs on an initialised data directory: make one of a bare temporary directory
  if (!existsSync(join(dir, SETTINGS_FILE))) await initDataDir(dir, extra.includes("--schemas") ? extra[extra.indexOf("--schemas") + 1]! : SCHEMAS);
  const running = runCdp(["watch", "--dir", dir, "--schemas", SCHEMAS, ...extra]);
  await waitUntil(() => running.output().includes("cdp is watching") || running.child.exitCode !== null);
  if (running.child.exitCode !== null) throw new Error(`cdp watch exited early:\n${running.output()}`);
  return running;
}

/** Append to the data directory's inbox (as `echo >>` does), then wait until the journal holds `changes` changes. */
export async function appendAndWait(dir: string, text: string, changes: number): Promise<void> {
  await appendFile(join(dir, "cdp.new"), text);
  await waitUntil(async () => (await journalOf(dir)).length === changes);
}

/**
 * The timeout of tests that start etcd and several hosts, and bake rollouts: up to ~30 s under the
 * whole suite's load on two cores, and no test may come within 2× of its timeout.
 */
export const FLEET_TIMEOUT = 120_000;

/** Wait (on real time, polling) until `check` holds; after `timeout` ms, fail naming what it waited for. */
export async function waitUntil(check: () => boolean | Promise<boolean>, timeout = 20_000, what = `${check}`): Promise<void> {
  const deadline = Date.now() + timeout;
  while (!(await check())) {
    // named by the check's own text unless the caller says it better: which of 280 waits it was
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout / 1000} s waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** A pino logger whose JSON lines the test can read. */
export function capturedLogger(): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
      done();
    },
  });
  return { logger: pino(stream), lines };
}

/** One server-sent event as received. */
export interface StreamedEvent {
  id: string | undefined;
  event: string;
  data: string;
}

/** Follow a server-sent event stream; it is closed after the test. */
export function openEvents(url: string, headers: Record<string, string> = {}) {
  const events: StreamedEvent[] = [];
  let raw = "";
  let status: number | undefined;
  const request = http.get(url, { headers: { accept: "text/event-stream", ...headers } }, (res) => {
    status = res.statusCode;
    res.setEncoding("utf8");
    res.on("data", (chunk: string) => {
      raw += chunk;
      for (let end = raw.indexOf("\n\n"); end !== -1; end = raw.indexOf("\n\n")) {
        const block = raw.slice(0, end);
        raw = raw.slice(end + 2);
        const field = (name: string) =>
          block
            .split("\n")
            .find((line) => line.startsWith(`${name}: `))
            ?.slice(name.length + 2);
        const data = field("data");
        if (data !== undefined) events.push({ id: field("id"), event: field("event") ?? "message", data });
        else comments.push(block);
      }
    });
  });
  const comments: string[] = [];
  request.on("error", () => undefined);
  const close = () => request.destroy();
  cleanups.push(async () => close());
  return {
    events,
    comments,
    status: () => status,
    /** The data of the change events so far, parsed. */
    changes: () => events.filter((event) => event.event === "message").map((event) => JSON.parse(event.data) as Record<string, unknown>),
    close,
  };
}
