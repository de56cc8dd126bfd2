// The documentation's CLI sessions, run as written: every indented block whose lines start with
// `$ ` in README.md and docs/*.md. Each command runs in bash from the repository's root with the
// real `cdp` on PATH; what the page shows after it must appear in its output, in order (`…`
// stands for anything: times, pids, absolute paths). `cdp watch` runs in the background, as in a
// second terminal; before each next command the runner waits, as a person would, until the
// watcher has read the inbox (and taken a changed schema's version: read in-process, as a spawned
// `cdp status` per step cost half the tour's time). /tmp/cdp-NAME directories become fresh
// temporary ones. Each command has its own bounded time, so a hang names its step.
import { spawn } from "node:child_process";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { openDataDir } from "../src/store/datadir.js";
import { readStatus } from "../src/cli/status.js";
import { afterThisTest, CLI, tempDir, waitUntil } from "./helpers.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

interface Step {
  command: string;
  expected: string[];
}

/** The sessions of a page: `$ ` commands (a trailing `\` continues one) and the lines after each. */
function sessionsOf(text: string): Step[] {
  const steps: Step[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (!line.startsWith("    $ ")) continue;
    let command = line.slice(6);
    while (command.endsWith("\\") && i + 1 < lines.length) command = `${command.slice(0, -1)} ${lines[++i]!.trim()}`;
    const expected: string[] = [];
    while (i + 1 < lines.length && lines[i + 1]!.startsWith("    ") && !lines[i + 1]!.startsWith("    $ ")) expected.push(lines[++i]!.slice(4));
    steps.push({ command, expected });
  }
  return steps;
}

const squeeze = (line: string) => line.trim().replace(/\s+/g, " ");

/** Whether `expected` appears in `actual`, line by line and in order, `…` matching any text. */
function appearsIn(expected: string[], actual: string[]): string | undefined {
  let at = 0;
  for (const want of expected.map(squeeze).filter((line) => line !== "")) {
    const pattern = new RegExp(
      `^${want
        .split("…")
        .map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"))
        .join(".*")}$`,
    );
    while (at < actual.length && !pattern.test(squeeze(actual[at]!))) at++;
    if (at === actual.length) return want;
    at++;
  }
  return undefined;
}

/** How long one command of a session may take (a CLI starts in about half a second). */
const STEP_TIMEOUT = 15_000;

function bash(command: string, env: NodeJS.ProcessEnv): Promise<string> {
  const child = spawn("bash", ["-c", `{ ${command}\n} 2>&1`], { cwd: ROOT, env, stdio: ["ignore", "pipe", "inherit"] });
  let output = "";
  child.stdout.on("data", (data: Buffer) => (output += data.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`$ ${command}\ndid not finish within ${STEP_TIMEOUT} ms; it printed:\n${output}`));
    }, STEP_TIMEOUT);
    child.on("exit", () => {
      clearTimeout(timer);
      resolve(output);
    });
  });
}

/** The watcher's state on `dir`, as `cdp status --json` prints it. */
async function statusOf(dir: string) {
  const { schemas } = await openDataDir(dir);
  return readStatus(dir, schemas!);
}

async function runSessions(page: string): Promise<void> {
  const steps = sessionsOf(await readFile(join(ROOT, page), "utf8"));
  expect(steps.length, `${page} has no session`).toBeGreaterThan(0);
  const root = await tempDir();
  const bin = join(root, "bin");
  await mkdir(bin);
  await writeFile(join(bin, "cdp"), `#!/bin/sh\nexec "${process.execPath}" "${CLI}" "$@"\n`, { mode: 0o755 });
  const env = { ...process.env, PATH: `${bin}:${process.env.PATH}` };
  const local = (text: string) => text.replace(/\/tmp\/(cdp-[a-z]+)/g, `${root}/$1`);
  const watched: string[] = [];
  const settle = async () => {
    for (const dir of watched) {
      await waitUntil(async () => {
        // and, after a schema file changed, until the watcher has taken its version
        const status = await statusOf(dir);
        return status.waiting === 0 && status.apps.every(({ version, inForce }) => inForce === undefined || (version ?? 1) === inForce);
      }, STEP_TIMEOUT);
    }
  };
  for (const step of steps) {
    const command = local(step.command);
    const watch = /^cdp watch --dir (\S+)(.*?)\s*&?$/.exec(command);
    if (watch) {
      const child = spawn("bash", ["-c", `exec ${command.replace(/\s*&$/, "")}`], { cwd: ROOT, env, stdio: "ignore" });
      afterThisTest(async () => {
        child.kill("SIGTERM");
        await new Promise((resolve) => (child.exitCode === null ? child.on("exit", resolve) : resolve(undefined)));
      });
      await waitUntil(async () => (await statusOf(watch[1]!)).watcher.running, STEP_TIMEOUT);
      watched.push(watch[1]!);
      continue;
    }
    const output = await bash(command, env);
    const missing = appearsIn(step.expected.map(local), output.split("\n"));
    expect(missing, `${page}: $ ${step.command}\n--- printed:\n${output}--- not found: ${missing}`).toBeUndefined();
    await settle();
  }
}

/** A page's whole session: its steps are bounded one by one (STEP_TIMEOUT); this is the backstop. */
const SESSION_TIMEOUT = 120_000;

describe("the documentation's sessions, run as written", () => {
  it(
    "README.md: the five-minute tour",
    async () => {
      await runSessions("README.md");
    },
    SESSION_TIMEOUT,
  );

  it.each(["docs/operating.md", "docs/change-management.md"])(
    "%s",
    async (page) => {
      await runSessions(page);
    },
    SESSION_TIMEOUT,
  );

  it("covers every page with a CLI session", async () => {
    const pages = (await readdir(join(ROOT, "docs"))).map((name) => `docs/${name}`);
    const withSessions: string[] = [];
    for (const page of pages) if (sessionsOf(await readFile(join(ROOT, page), "utf8")).some((step) => step.command.startsWith("cdp "))) withSessions.push(page);
    expect(withSessions.sort()).toEqual(["docs/change-management.md", "docs/operating.md"]);
  });
});
