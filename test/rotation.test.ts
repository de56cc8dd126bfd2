// Exactly once under the tools operators use on the inbox: logrotate (create and copytruncate,
// several times while cdp is stopped or paused), editors that save a new file, and plain mv/cp.
// Every case counts what was written against what was journaled or rejected, with no duplicate.
import { execFile, spawn } from "node:child_process";
import { readdirSync, readlinkSync } from "node:fs";
import { appendFile, open, readdir, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { cdp, journalOf, readText, recordLines, SCHEMAS, startWatch, waitUntil, type Running, dataDir, appendAndWait } from "./helpers.js";

const run = promisify(execFile);

/** Run Debian's logrotate itself, forced, on cdp.new with the given directives. */
async function logrotate(dir: string, directives: string): Promise<void> {
  const conf = join(dir, "..", `${dir.split("/").at(-1)}-logrotate.conf`);
  await writeFile(conf, `${join(dir, "cdp.new")} {\n${directives}\n  missingok\n  nocompress\n}\n`, { mode: 0o644 });
  await run("/usr/sbin/logrotate", ["-f", "-s", `${conf}.state`, conf]);
}

const lines = (prefix: string, from: number, count: number) => Array.from({ length: count }, (_, i) => `ticker:name:${prefix}-${from + i}`);
const text = (list: string[]) => list.map((line) => `${line}\n`).join("");

/** Written lines appear once each in the journal, in the order written, and nothing is rejected. */
async function expectExactlyOnce(dir: string, written: string[]): Promise<void> {
  await waitUntil(async () => (await journalOf(dir)).length >= written.length);
  const journal = await journalOf(dir);
  expect(journal).toEqual(written);
  expect(await recordLines(join(dir, "cdp.rej"))).toEqual([]);
}

async function stopped(watch: Running): Promise<void> {
  watch.child.kill("SIGTERM");
  expect(await watch.exited).toBe(0);
}

describe("the inbox under logrotate, editors and copies", () => {
  it("reads every file rotated in between when cdp.new was rotated twice while cdp was stopped", async () => {
    const dir = await dataDir();
    const inbox = join(dir, "cdp.new");
    let watch = await startWatch(dir);
    await appendAndWait(dir, "ticker:name:a1\n", 1);
    await stopped(watch);
    // the reproduction, step by step
    await appendFile(inbox, "ticker:name:a2\n");
    await rename(inbox, `${inbox}.1`);
    await writeFile(inbox, "ticker:name:b1\n");
    await rename(`${inbox}.1`, `${inbox}.2`);
    await rename(inbox, `${inbox}.1`);
    await writeFile(inbox, "ticker:name:c1\n");
    watch = await startWatch(dir);
    await expectExactlyOnce(dir, ["ticker:name:a1", "ticker:name:a2", "ticker:name:b1", "ticker:name:c1"]);
    await stopped(watch);
  });

  it("loses nothing when logrotate (create) runs five times while cdp is paused, with writers appending", async () => {
    const dir = await dataDir();
    const inbox = join(dir, "cdp.new");
    const watch = await startWatch(dir);
    const written: string[] = [];
    const write = async (batch: string[]) => {
      for (const line of batch) await appendFile(inbox, `${line}\n`); // each line opens cdp.new anew, as echo >> does
      written.push(...batch);
    };
    await write(lines("before", 0, 200));
    await waitUntil(async () => (await journalOf(dir)).length === 200);
    watch.child.kill("SIGSTOP");
    for (let round = 0; round < 5; round++) {
      await write(lines(`round${round}`, 0, 300));
      await logrotate(dir, "  rotate 20\n  create 0600");
    }
    await write(lines("after", 0, 100));
    watch.child.kill("SIGCONT");
    await expectExactlyOnce(dir, written);
    expect((await readdir(dir)).filter((name) => /^cdp\.new\.\d+$/.test(name))).toHaveLength(5);
    await stopped(watch);
  });

  it("loses nothing when logrotate (create) rotates in a loop against running writers and a running cdp", async () => {
    const dir = await dataDir();
    const inbox = join(dir, "cdp.new");
    const watch = await startWatch(dir);
    // two writer processes, each appending 1,500 lines one `open(O_APPEND)` at a time, with pauses
    const writer = `const fs = require("node:fs"); const sleep = new Int32Array(new SharedArrayBuffer(4));
      for (let i = 0; i < 1500; i++) { fs.appendFileSync(process.argv[1], "ticker:name:w" + process.argv[2] + "-" + i + "\\n"); if (i % 10 === 0) Atomics.wait(sleep, 0, 0, 2); }`;
    const writers = [0, 1].map((k) => {
      const child = spawn(process.execPath, ["-e", writer, inbox, String(k)], { stdio: "ignore" });
      return new Promise((resolve) => child.on("exit", resolve));
    });
    let done = false;
    void Promise.all(writers).then(() => (done = true));
    let rotations = 0;
    while (!done) {
      // logrotate fails now and then here ("error creating output file …: File exists") when a writer
      // creates cdp.new between its rename and its create: its race with writers, not cdp's
      if (
        await logrotate(dir, "  rotate 200\n  create 0600").then(
          () => true,
          () => false,
        )
      )
        rotations++;
      if (rotations === 3) watch.child.kill("SIGSTOP"); // and a pause in the middle of it
      if (rotations === 8) watch.child.kill("SIGCONT");
    }
    watch.child.kill("SIGCONT");
    // logrotate itself loses a line now and then here: when a writer creates cdp.new between its
    // rename and its create, it moves the writer's file to cdp.new-DATE.backup, over the last one.
    // So: every line the inbox files hold is journaled once, and nothing else is.
    const inFiles = async () =>
      (await Promise.all((await readdir(dir)).filter((name) => name.startsWith("cdp.new")).map((name) => recordLines(join(dir, name))))).flat();
    await waitUntil(async () => (await journalOf(dir)).length >= (await inFiles()).length);
    const journal = await journalOf(dir);
    expect(new Set(journal).size).toBe(journal.length);
    expect(journal.length).toBeGreaterThan(2900);
    expect(journal.filter((line) => !/^ticker:name:w[01]-\d+$/.test(line))).toEqual([]);
    expect((await inFiles()).filter((line) => !journal.includes(line))).toEqual([]);
    expect(rotations).toBeGreaterThan(3);
    expect(await readText(join(dir, "cdp.rej"))).toBe("");
    await stopped(watch);
  });

  it("still reads the lines of a writer that kept the rotated file open (logrotate create, no postrotate)", async () => {
    const dir = await dataDir();
    const inbox = join(dir, "cdp.new");
    const watch = await startWatch(dir);
    const writer = await open(inbox, "a"); // a service that opened the inbox once and keeps writing to it
    await writer.write("ticker:name:held-1\n");
    await waitUntil(async () => (await journalOf(dir)).length === 1);
    await logrotate(dir, "  rotate 5\n  create 0600");
    await appendAndWait(dir, "ticker:name:new-1\n", 2);
    await writer.write("ticker:name:held-2\n"); // lands in cdp.new.1, after cdp moved on to the new cdp.new
    await writer.close();
    await waitUntil(async () => (await journalOf(dir)).length === 3);
    expect(await journalOf(dir)).toEqual(["ticker:name:held-1", "ticker:name:new-1", "ticker:name:held-2"]);
    await stopped(watch);
  });

  it("reads the rest of the copy, then the truncated file anew, after copytruncate while cdp was stopped", async () => {
    const dir = await dataDir();
    const inbox = join(dir, "cdp.new");
    let watch = await startWatch(dir);
    const first = lines("first", 0, 100);
    await appendAndWait(dir, text(first), 100);
    await stopped(watch);
    const unread = lines("unread", 0, 20); // written while cdp was stopped, before the copy
    await appendFile(inbox, text(unread));
    await logrotate(dir, "  rotate 5\n  copytruncate");
    const after = lines("after", 0, 200); // cdp.new grows past the saved offset again
    await appendFile(inbox, text(after));
    watch = await startWatch(dir);
    await expectExactlyOnce(dir, [...first, ...unread, ...after]);
    expect(watch.output()).toContain("copied and truncated");
    await stopped(watch);
  });

  it("reads the rest of the copy, then the truncated file anew, after copytruncate while cdp was paused", async () => {
    const dir = await dataDir();
    const inbox = join(dir, "cdp.new");
    const watch = await startWatch(dir);
    const first = lines("first", 0, 300);
    await appendAndWait(dir, text(first), 300);
    watch.child.kill("SIGSTOP");
    const unread = lines("unread", 0, 500);
    await appendFile(inbox, text(unread));
    await logrotate(dir, "  rotate 5\n  copytruncate");
    const after = lines("after", 0, 1000);
    await appendFile(inbox, text(after));
    watch.child.kill("SIGCONT");
    await expectExactlyOnce(dir, [...first, ...unread, ...after]);
    await stopped(watch);
  });

  it("reads the copy first when cdp.new is copied, truncated and written again before cdp read any of it (paused), and not a plain copy", async () => {
    const dir = await dataDir();
    const inbox = join(dir, "cdp.new");
    const watch = await startWatch(dir);
    const first = lines("first", 0, 100);
    await appendAndWait(dir, text(first), 100);
    // cdp reads the rest of the copy (nothing), then opens cdp.new again, at its start
    const opened = (path: string) =>
      readdirSync(`/proc/${watch.child.pid}/fd`).some((fd) => {
        try {
          return readlinkSync(`/proc/${watch.child.pid}/fd/${fd}`, { encoding: "utf8" }) === path;
        } catch {
          return false; // closed meanwhile
        }
      });
    const startedAgain = async () => {
      const finished = () => watch.output().split("finished an inbox file that is no longer cdp.new").length;
      const before = finished();
      await logrotate(dir, "  rotate 5\n  copytruncate");
      await waitUntil(() => finished() > before && opened(inbox));
    };
    await startedAgain();
    watch.child.kill("SIGSTOP");
    const unread = lines("unread", 0, 20); // only the copy will hold these
    await appendFile(inbox, text(unread));
    await logrotate(dir, "  rotate 5\n  copytruncate");
    const after = lines("after", 0, 50);
    await appendFile(inbox, text(after));
    watch.child.kill("SIGCONT");
    await expectExactlyOnce(dir, [...first, ...unread, ...after]);
    expect(watch.output()).toContain("before cdp read any of it");

    // an operator's plain copy (cdp.new not truncated) is not read: its lines are cdp.new's
    await startedAgain();
    watch.child.kill("SIGSTOP");
    const more = lines("more", 0, 10);
    await appendFile(inbox, text(more));
    await run("cp", [inbox, `${inbox}.bak`]);
    watch.child.kill("SIGCONT");
    await expectExactlyOnce(dir, [...first, ...unread, ...after, ...more]);
    await stopped(watch);
  });

  it("follows copytruncate while running, each time", async () => {
    const dir = await dataDir();
    const inbox = join(dir, "cdp.new");
    const watch = await startWatch(dir);
    const written: string[] = [];
    for (let round = 0; round < 4; round++) {
      const batch = lines(`round${round}`, 0, 50);
      await appendFile(inbox, text(batch));
      written.push(...batch);
      // cdp has read this file before it is copied and truncated (a copy made before cdp read
      // any of the file: the test above)
      await waitUntil(async () => (await journalOf(dir)).length === written.length);
      await logrotate(dir, "  rotate 10\n  copytruncate");
    }
    const last = lines("last", 0, 10);
    await appendFile(inbox, text(last));
    await expectExactlyOnce(dir, [...written, ...last]);
    await stopped(watch);
  });

  it("applies nothing twice when an editor saves cdp.new as a new file (sed -i), running or stopped", async () => {
    const dir = await dataDir();
    const inbox = join(dir, "cdp.new");
    let watch = await startWatch(dir);
    const first = lines("first", 0, 5);
    await appendAndWait(dir, text(first), 5);
    // a save that changes nothing, then one that adds a line at the end: both write a new file
    await run("sed", ["-i", "s/x/x/", inbox]);
    await run("sed", ["-i", "$a ticker:name:added-by-editor", inbox]);
    await expectExactlyOnce(dir, [...first, "ticker:name:added-by-editor"]);
    await stopped(watch);
    await run("sed", ["-i", "$a ticker:name:added-while-stopped", inbox]);
    watch = await startWatch(dir);
    await expectExactlyOnce(dir, [...first, "ticker:name:added-by-editor", "ticker:name:added-while-stopped"]);
    expect(watch.output()).toContain("saved again as a new file");
    await stopped(watch);
  });

  it("reads a re-saved file from its start when lines before the saved position were changed", async () => {
    const dir = await dataDir();
    const inbox = join(dir, "cdp.new");
    const watch = await startWatch(dir);
    await appendAndWait(dir, "ticker:name:one\nticker:name:two\n", 2);
    await run("sed", ["-i", "s/one/ONE/", inbox]);
    await waitUntil(async () => (await journalOf(dir)).length === 4);
    expect(await journalOf(dir)).toEqual(["ticker:name:one", "ticker:name:two", "ticker:name:ONE", "ticker:name:two"]);
    await stopped(watch);
  });

  it("keeps its place across a restart in a journal written before fingerprints (inbox=ID@OFFSET)", async () => {
    const dir = await dataDir();
    const inbox = join(dir, "cdp.new");
    let watch = await startWatch(dir);
    await appendAndWait(dir, "ticker:name:one\n", 1);
    await stopped(watch);
    const journal = join(dir, "cdp");
    await writeFile(journal, (await readText(journal)).replace(/(inbox=\S+@\d+)\/[0-9a-f]+/, "$1"));
    await appendFile(inbox, "ticker:name:two\n");
    watch = await startWatch(dir);
    await expectExactlyOnce(dir, ["ticker:name:one", "ticker:name:two"]);
    await stopped(watch);
    expect((await cdp(["get", "--dir", dir, "--schemas", SCHEMAS, "ticker.name"])).output.trim()).toBe('"two"');
  });
});

describe("a file written again to the very same length", () => {
  it("is noticed at once, not when it next grows: truncated and rewritten while cdp was paused", async () => {
    const dir = await dataDir();
    const inbox = join(dir, "cdp.new");
    const watch = await startWatch(dir);
    await appendAndWait(dir, "ticker:name:aaaa\n", 1);
    watch.child.kill("SIGSTOP");
    await writeFile(inbox, "ticker:name:bbbb\n"); // truncated, then as many bytes as were read
    watch.child.kill("SIGCONT");
    await waitUntil(async () => (await journalOf(dir)).length === 2);
    expect(await journalOf(dir)).toEqual(["ticker:name:aaaa", "ticker:name:bbbb"]);
    await stopped(watch);
  });
});
