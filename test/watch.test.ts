// `cdp watch` as an operator runs it: a real process, real files, lines appended by hand.
import { execFile } from "node:child_process";
import { appendFile, rename, rm, stat, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { cdp, getConfig, journalOf, readText, recordLines, SCHEMAS, startWatch, tempDir, waitUntil, type Running, dataDir, appendAndWait } from "./helpers.js";

const sh = promisify(execFile);

async function stopWatch(running: Running): Promise<number | null> {
  running.child.kill("SIGTERM");
  return running.exited;
}

const rejectsOf = (dir: string) => readText(join(dir, "cdp.rej"));

describe("cdp watch", () => {
  it("applies a valid line: journal, then table; `cdp get` shows it", async () => {
    const dir = await dataDir();
    const watch = await startWatch(dir);
    await appendAndWait(dir, "ticker:interval:1500\n", 1);
    expect(await journalOf(dir)).toEqual(["ticker:interval:1500"]);
    expect(await readText(join(dir, "cdp"))).toMatch(/^# rev=1 seq=1 time=\d{4}-\d\d-\d\dT[\d:.]+Z source=cdp\.new:1 inbox=[^\s@]+@21\/[0-9a-f]{16}\n/);
    expect(await getConfig(dir, "ticker.interval")).toBe(1500);
    expect(await getConfig(dir, "ticker")).toEqual({ interval: 1500, name: "tick", enabled: true });
    expect(await stopWatch(watch)).toBe(0);
  });

  it("records each kind of rejection in cdp.rej with its reason, and applies nothing for it", async () => {
    const dir = await dataDir();
    const watch = await startWatch(dir);
    const lines = ["broken", "nope:x:1", "ticker:nope:1", "ticker:interval:abc", "ticker:interval:100", "ticker:interval:1500"];
    await appendAndWait(dir, lines.map((line) => `${line}\n`).join(""), 1);
    const rejects = await rejectsOf(dir);
    const reasons = [
      ["cdp.new:1", "column 7: expected ':', found end of line (a change is app:key:value)", "broken"],
      ["cdp.new:2", `unknown app "nope" (known apps: db, ticker)`, "nope:x:1"],
      ["cdp.new:3", `ticker has no key "nope"`, "ticker:nope:1"],
      ["cdp.new:4", "ticker.interval must be an integer, got abc (not JSON)", "ticker:interval:abc"],
      ["cdp.new:5", "ticker.interval must be > 200, got 100", "ticker:interval:100"],
    ];
    for (const [source, reason, line] of reasons) {
      expect(rejects).toMatch(new RegExp(`^# seq=\\d+ time=\\S+ source=${source} reason: ${escapeRegExp(reason!)}.*\\n${escapeRegExp(line!)}$`, "m"));
    }
    expect(await recordLines(join(dir, "cdp.rej"))).toEqual(lines.slice(0, 5));
    expect(await journalOf(dir)).toEqual(["ticker:interval:1500"]);
    await stopWatch(watch);
  });

  it("takes values with ':', a string key given 007, CRLF endings and a shell's echo >>", async () => {
    const dir = await dataDir();
    const watch = await startWatch(dir);
    await appendAndWait(dir, "ticker:name:http://host:8080/x\r\n", 1);
    expect(await getConfig(dir, "ticker.name")).toBe("http://host:8080/x");
    await sh("sh", ["-c", `echo 'ticker:name:007' >> '${join(dir, "cdp.new")}'`]);
    await waitUntil(async () => (await journalOf(dir)).length === 2);
    expect(await getConfig(dir, "ticker.name")).toBe("007");
    await stopWatch(watch);
  });

  it("leaves a partial last line until its newline arrives", async () => {
    const dir = await dataDir();
    const watch = await startWatch(dir, ["--log-level", "debug", "--poll-interval", "100"]);
    await appendFile(join(dir, "cdp.new"), "ticker:interval:1500\nticker:interval:25");
    await waitUntil(() => watch.output().includes("waiting for the rest of a line"));
    expect(await journalOf(dir)).toEqual(["ticker:interval:1500"]);
    await appendAndWait(dir, "00\n", 2);
    expect(await journalOf(dir)).toEqual(["ticker:interval:1500", "ticker:interval:2500"]);
    await stopWatch(watch);
  });

  it("applies 1,000 lines written at once, in order", async () => {
    const dir = await dataDir();
    const watch = await startWatch(dir);
    const lines = Array.from({ length: 1000 }, (_, i) => (i % 10 === 9 ? `ticker:interval:${i % 100}` : `ticker:interval:${1000 + i}`));
    await appendFile(join(dir, "cdp.new"), lines.map((line) => `${line}\n`).join(""));
    await waitUntil(async () => (await journalOf(dir)).length === 900 && (await recordLines(join(dir, "cdp.rej"))).length === 100);
    const accepted = lines.filter((_, i) => i % 10 !== 9);
    expect(await journalOf(dir)).toEqual(accepted);
    expect(await recordLines(join(dir, "cdp.rej"))).toEqual(lines.filter((_, i) => i % 10 === 9));
    expect(await readText(join(dir, "cdp"))).toContain("# rev=900 seq=999 ");
    expect(await getConfig(dir, "ticker.interval")).toBe(1998);
    await stopWatch(watch);
  });

  it("restarts where it stopped: lines appended while down are processed, none twice", async () => {
    const dir = await dataDir();
    const inbox = join(dir, "cdp.new");
    let watch = await startWatch(dir);
    await appendFile(inbox, "ticker:interval:1500\nbroken\n");
    await waitUntil(async () => (await recordLines(join(dir, "cdp.rej"))).length === 1);
    expect(await stopWatch(watch)).toBe(0);

    await appendFile(inbox, "ticker:interval:2500\nbroken again\n# a comment\n");
    watch = await startWatch(dir);
    await waitUntil(async () => (await recordLines(join(dir, "cdp.rej"))).length === 2);
    expect(await stopWatch(watch)).toBe(0);
    watch = await startWatch(dir);
    await appendAndWait(dir, "ticker:interval:3500\n", 3);
    expect(await stopWatch(watch)).toBe(0);

    expect(await journalOf(dir)).toEqual(["ticker:interval:1500", "ticker:interval:2500", "ticker:interval:3500"]);
    expect(await recordLines(join(dir, "cdp.rej"))).toEqual(["broken", "broken again"]);
    expect(await rejectsOf(dir)).toContain("source=cdp.new:4 ");
    expect(await getConfig(dir, "ticker.interval")).toBe(3500);
  });

  it("follows an inbox created after start, replaced by mv, truncated, or deleted and recreated", async () => {
    const dir = await dataDir();
    const inbox = join(dir, "cdp.new");
    const watch = await startWatch(dir, ["--poll-interval", "200"]);
    await appendAndWait(dir, "ticker:interval:1001\n", 1);

    await writeFile(join(dir, "next"), "ticker:interval:1002\n");
    await rename(join(dir, "next"), inbox);
    await waitUntil(async () => (await journalOf(dir)).length === 2);

    await truncate(inbox, 0);
    await waitUntil(() => watch.output().includes("the inbox was truncated") || watch.output().includes("reading it from the start"));
    await appendAndWait(dir, "ticker:interval:1003\n", 3);

    await rm(inbox);
    await waitUntil(() => watch.output().includes("the inbox was removed"));
    await appendAndWait(dir, "ticker:interval:1004\n", 4);

    expect(await journalOf(dir)).toEqual(["ticker:interval:1001", "ticker:interval:1002", "ticker:interval:1003", "ticker:interval:1004"]);
    await stopWatch(watch);
  });

  it("rejects a line over the length limit once, recorded cut short with its full length", async () => {
    const dir = await dataDir();
    const watch = await startWatch(dir, ["--max-line-bytes", "100"]);
    const long = `ticker:name:${"x".repeat(300)}`;
    await appendAndWait(dir, `${long}\nticker:interval:1500\n`, 1);
    const rejects = await rejectsOf(dir);
    expect(rejects).toContain(`source=cdp.new:1 length=312 reason: line is 312 bytes, over the limit of 100\n${long.slice(0, 100)}\n`);
    await stopWatch(watch);
  });

  it("never starts on an invalid journal: exit 2 with file:line and why", async () => {
    const dir = await dataDir();
    await writeFile(join(dir, "cdp"), "ticker:interval:1500\nticker:interval:100\n");
    const { code, output } = await cdp(["watch", "--dir", dir, "--schemas", SCHEMAS]);
    expect(code).toBe(2);
    expect(output).toContain(`cdp: ${join(dir, "cdp")}:2: ticker.interval must be > 200, got 100`);
    expect(output).not.toMatch(/\n\s+at /); // no stack trace
  });

  it("never starts with an invalid schema: exit 2 naming the file", async () => {
    const schemas = await tempDir();
    await writeFile(join(schemas, "app.schema.json"), '{"type": "object", "properties": {"a": {"type": "integr"}}}');
    const { code, output } = await cdp(["watch", "--dir", await dataDir(), "--schemas", schemas]);
    expect(code).toBe(2);
    expect(output).toContain(`${join(schemas, "app.schema.json")}: not a valid JSON Schema`);
  });

  it("creates its data directory and files private to its user", async () => {
    const dir = join(await tempDir(), "new", "data");
    const watch = await startWatch(dir);
    await appendFile(join(dir, "cdp.new"), "ticker:interval:1500\nbroken\n");
    await waitUntil(async () => (await recordLines(join(dir, "cdp.rej"))).length === 1);
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    expect((await stat(join(dir, "cdp"))).mode & 0o777).toBe(0o600);
    expect((await stat(join(dir, "cdp.rej"))).mode & 0o777).toBe(0o600);
    await stopWatch(watch);
  });
});

describe("cdp push, get, check and usage", () => {
  it("push appends lines that the watcher then applies", async () => {
    const dir = await dataDir();
    expect((await cdp(["push", "--dir", dir, "ticker:interval:1500", "ticker:name:pushed"])).code).toBe(0);
    expect(await recordLines(join(dir, "cdp.new"))).toEqual(["ticker:interval:1500", "ticker:name:pushed"]);
    expect((await cdp(["push", "--dir", dir, "-"], "ticker:enabled:false\n")).code).toBe(0);
    const watch = await startWatch(dir);
    await waitUntil(async () => (await journalOf(dir)).length === 3);
    expect(await getConfig(dir, "ticker")).toEqual({ interval: 1500, name: "pushed", enabled: false });
    await stopWatch(watch);
  });

  it("push refuses a LINE with a newline in it", async () => {
    const dir = await dataDir();
    const { code, output } = await cdp(["push", "--dir", dir, "ticker:name:a\nb"]);
    expect(code).toBe(2);
    expect(output).toContain("may not contain a newline");
  });

  it("get prints all apps, one app or one key, and refuses unknown ones", async () => {
    const dir = await dataDir();
    await writeFile(join(dir, "cdp"), "db:pool.max:20\n");
    expect(await getConfig(dir)).toEqual({ db: { host: "localhost", pool: { min: 1, max: 20 } }, ticker: { interval: 1000, name: "tick", enabled: true } });
    expect(await getConfig(dir, "db.pool")).toEqual({ min: 1, max: 20 });
    expect(await cdp(["get", "--dir", dir, "--schemas", SCHEMAS, "nope"])).toMatchObject({ code: 2, output: expect.stringContaining(`unknown app "nope"`) });
    expect(await cdp(["get", "--dir", dir, "--schemas", SCHEMAS, "db.nope"])).toMatchObject({
      code: 2,
      output: expect.stringContaining(`db has no key "nope"`),
    });
  });

  it("check exits 0 when every line would be accepted", async () => {
    const dir = await dataDir();
    await writeFile(join(dir, "changes"), "# deploy 42\nticker:interval:1500\n\nticker:mode:fast\n");
    expect(await cdp(["check", "--schemas", SCHEMAS, join(dir, "changes")])).toEqual({ code: 0, output: "2 change lines: 2 would be accepted, 0 rejected\n" });
  });

  it("check exits 1 and lists each line that would be rejected, judging lines in order", async () => {
    const { code, output } = await cdp(["check", "--schemas", SCHEMAS, "-"], "ticker:interval:9000\nticker:mode:fast\nbroken\nticker:interval:100\n");
    expect(code).toBe(1);
    expect(output).toBe(
      "stdin:2: ticker.interval must be <= 5000, got 9000\n" +
        "stdin:3: column 7: expected ':', found end of line (a change is app:key:value)\n" +
        "stdin:4: ticker.interval must be > 200, got 100\n" +
        "4 change lines: 1 would be accepted, 3 rejected\n",
    );
  });

  it("check --dir judges lines against the current configuration", async () => {
    const dir = await dataDir();
    await writeFile(join(dir, "cdp"), "ticker:interval:9000\n");
    const { code, output } = await cdp(["check", "--schemas", SCHEMAS, "--dir", dir, "-"], "ticker:mode:fast\n");
    expect(code).toBe(1);
    expect(output).toContain("stdin:1: ticker.interval must be <= 5000, got 9000");
  });

  it.each([
    [[], "Usage:"],
    [["frobnicate"], `unknown command "frobnicate"`],
    [["watch", "--schemas", "s"], "--dir is required"],
    [["watch", "--dir", "d", "--schemas", "s", "--bogus"], "unknown option --bogus"],
    [["watch", "--dir", "d", "--schemas", "s", "--poll-interval", "soon"], `--poll-interval must be a positive whole number up to 2147483647, got "soon"`],
    [["push", "--dir", "d"], "give at least one LINE"],
    [["check", "--schemas", "/nonexistent"], "cannot read the schema directory /nonexistent"],
    [["watch", "--dir", "/dev/null", "--schemas", "s"], "/dev/null is not a directory: --dir names cdp's data directory"],
    [["push", "--dir", "/dev/null", "x:y:1"], "/dev/null is not a directory: --dir names cdp's data directory"],
  ])("exits 2 on bad usage %j", async (args, message) => {
    const { code, output } = await cdp(args);
    expect(code).toBe(2);
    expect(output).toContain(message);
  });

  it.each(["watch", "push", "get", "check"])("explains `cdp %s --help`", async (command) => {
    const { code, output } = await cdp([command, "--help"]);
    expect(code).toBe(0);
    expect(output).toContain(`Usage: cdp ${command}`);
  });
});

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

describe("restarting on an inbox that changed while cdp was stopped", () => {
  it("numbers lines right after a batch that ended with a comment", async () => {
    const dir = await dataDir();
    let watch = await startWatch(dir);
    await appendAndWait(dir, "ticker:interval:1500\n# a note at the end\n", 1);
    watch.child.kill("SIGTERM");
    await watch.exited;
    await appendFile(join(dir, "cdp.new"), "ticker:interval:2500\n");
    watch = await startWatch(dir);
    await waitUntil(async () => (await journalOf(dir)).length === 2);
    const history = JSON.parse((await cdp(["history", "--dir", dir, "--json"])).output) as { source: string }[];
    expect(history.map((entry) => entry.source)).toEqual(["cdp.new:3", "cdp.new:1"]);
    watch.child.kill("SIGTERM");
  });

  async function runUntil(dir: string, journaled: number, rejected = 0): Promise<void> {
    const watch = await startWatch(dir);
    await waitUntil(async () => (await journalOf(dir)).length === journaled && (await recordLines(join(dir, "cdp.rej"))).length === rejected);
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
  }

  it("reads the rest of a rotated inbox first, then the new one", async () => {
    const dir = await dataDir();
    const inbox = join(dir, "cdp.new");
    await appendFile(inbox, "ticker:interval:1001\n");
    await runUntil(dir, 1);
    await appendFile(inbox, "ticker:interval:1002\n");
    await rename(inbox, `${inbox}.1`);
    await appendFile(inbox, "ticker:interval:1003\n");
    await runUntil(dir, 3);
    expect(await journalOf(dir)).toEqual(["ticker:interval:1001", "ticker:interval:1002", "ticker:interval:1003"]);
  });

  it("reads an inbox from its start when it is shorter than the saved position", async () => {
    const dir = await dataDir();
    const inbox = join(dir, "cdp.new");
    await appendFile(inbox, "ticker:interval:1001\nticker:interval:1002\n");
    await runUntil(dir, 2);
    await writeFile(inbox, "ticker:name:x\n");
    await runUntil(dir, 3);
    expect(await journalOf(dir)).toEqual(["ticker:interval:1001", "ticker:interval:1002", "ticker:name:x"]);
  });

  it("reads a deleted and recreated inbox from its start, even when it is longer and reuses the inode", async () => {
    const dir = await dataDir();
    const inbox = join(dir, "cdp.new");
    await appendFile(inbox, "ticker:interval:1001\n");
    await runUntil(dir, 1);
    await rm(inbox);
    await writeFile(inbox, "ticker:interval:1002\nticker:interval:1003\nticker:interval:1004\n");
    await runUntil(dir, 4);
    expect(await journalOf(dir)).toEqual(["ticker:interval:1001", "ticker:interval:1002", "ticker:interval:1003", "ticker:interval:1004"]);
  });
});
