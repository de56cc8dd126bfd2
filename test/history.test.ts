// Change management through the CLI: history, rollback, atomic multi-key changes.
import { execFile } from "node:child_process";
import { cp, readFile, writeFile } from "node:fs/promises";
import { userInfo } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { CLI, cdp, getConfig, journalOf, readText, SCHEMAS, startWatch, tempDir, waitUntil, type Running, dataDir, appendAndWait } from "./helpers.js";

const run = promisify(execFile);

/** A watcher on a fresh dir that has applied `lines` (all valid). */
async function watched(lines: string[], schemas = SCHEMAS): Promise<{ dir: string; watch: Running }> {
  const dir = await dataDir();
  const watch = await startWatch(dir, ["--schemas", schemas]);
  await appendAndWait(dir, lines.map((line) => `${line}\n`).join(""), lines.length);
  return { dir, watch };
}

describe("cdp history", () => {
  it("lists revisions newest first with time, source, key, old and new value", async () => {
    const { dir, watch } = await watched(["ticker:interval:1500", "ticker:name:abc", "ticker:interval:2500", "ticker:token:supersecret"]);
    const { code, output } = await cdp(["history", "--dir", dir, "--schemas", SCHEMAS]);
    expect(code).toBe(0);
    const lines = output.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^rev\s+time\s+source\s+key\s+change$/);
    expect(lines.slice(1).map((line) => line.replace(/\d{4}-\S+Z/, "T").replace(/\s+/g, " "))).toEqual([
      "4 T cdp.new:4 ticker.token [secret] → [secret]",
      "3 T cdp.new:3 ticker.interval 1500 → 2500",
      '2 T cdp.new:2 ticker.name "tick" → "abc"',
      "1 T cdp.new:1 ticker.interval 1000 → 1500",
    ]);
    expect(output).not.toContain("supersecret");
    watch.child.kill("SIGTERM");
  });

  it("filters by app or key, limits, and speaks JSON for scripts", async () => {
    const { dir, watch } = await watched(["ticker:interval:1500", "db:pool.max:20", "ticker:interval:2500", 'db:pool:{"min":2,"max":30}']);
    const json = await cdp(["history", "--dir", dir, "--schemas", SCHEMAS, "ticker.interval", "--limit", "1", "--json"]);
    expect(JSON.parse(json.output)).toEqual([
      { revision: 3, time: expect.stringMatching(/Z$/), source: "cdp.new:3", app: "ticker", key: "interval", value: 2500, previous: 1500 },
    ]);
    const pool = JSON.parse((await cdp(["history", "--dir", dir, "--schemas", SCHEMAS, "db.pool.max", "--json"])).output) as { revision: number }[];
    expect(pool.map((entry) => entry.revision)).toEqual([4, 2]);
    expect((await cdp(["history", "--dir", dir, "--schemas", SCHEMAS, "--limit", "x"])).code).toBe(2);
    watch.child.kill("SIGTERM");
  });

  it("shows a hand-written bootstrap as such", async () => {
    const dir = await dataDir();
    await writeFile(join(dir, "cdp"), "ticker:interval:2000\n");
    const { output } = await cdp(["history", "--dir", dir, "--schemas", SCHEMAS]);
    expect(output).toMatch(/^1\s+\(bootstrap\)\s+cdp:1\s+ticker\.interval\s+1000 → 2000$/m);
  });
});

describe("cdp rollback", () => {
  it("brings the configuration back to a revision through the inbox, as ordinary changes", async () => {
    const { dir, watch } = await watched(["ticker:interval:1500", "ticker:name:abc", "ticker:interval:2500", "db:pool.max:20"]);
    const { code, output } = await cdp(["rollback", "--dir", dir, "--schemas", SCHEMAS, "--to", "1"]);
    expect(code).toBe(0);
    expect(output.split("\n")).toEqual(expect.arrayContaining(["ticker:interval:1500", "ticker:name:tick", 'db:pool:{"min":1,"max":10}']));
    await waitUntil(async () => (await journalOf(dir)).length === 7);
    expect(await getConfig(dir, "ticker")).toEqual({ interval: 1500, name: "tick", enabled: true });
    expect(await getConfig(dir, "db")).toEqual({ host: "localhost", pool: { min: 1, max: 10 } });
    const history = JSON.parse((await cdp(["history", "--dir", dir, "--schemas", SCHEMAS, "--json", "--limit", "3"])).output) as {
      source: string;
      reason: string;
      by: string;
    }[];
    // each rollback line follows its `# by:` and `# reason:` comments (and the push's id before the first)
    expect(history.map((entry) => entry.source)).toEqual(["cdp.new:14", "cdp.new:11", "cdp.new:8"]);
    expect(history.map((entry) => entry.reason)).toEqual(Array(3).fill("rollback to revision 1"));
    expect(history.every((entry) => entry.by === userInfo().username)).toBe(true);
    watch.child.kill("SIGTERM");
  });

  it("undoes the latest change with --last, and prints without writing with --dry-run", async () => {
    const { dir, watch } = await watched(["ticker:interval:1500", "ticker:interval:2500"]);
    const dry = await cdp(["rollback", "--dir", dir, "--schemas", SCHEMAS, "--last", "--dry-run"]);
    expect(dry).toEqual({ code: 0, output: "ticker:interval:1500\n" });
    expect(await readText(join(dir, "cdp.new"))).toBe("ticker:interval:1500\nticker:interval:2500\n");
    expect((await cdp(["rollback", "--dir", dir, "--schemas", SCHEMAS, "--last"])).code).toBe(0);
    await waitUntil(async () => (await journalOf(dir)).length === 3);
    expect(await getConfig(dir, "ticker.interval")).toBe(1500);
    watch.child.kill("SIGTERM");
  });

  it("orders the lines so that a cross-field rule holds at every step", async () => {
    // at revision 1 the mode is slow with a long interval; "fast" allows at most 5000
    const { dir, watch } = await watched(["ticker:interval:9000", "ticker:mode:slow", "ticker:interval:3000", "ticker:mode:fast"]);
    expect((await cdp(["rollback", "--dir", dir, "--schemas", SCHEMAS, "--to", "2"])).code).toBe(0);
    await waitUntil(async () => (await journalOf(dir)).length === 6);
    expect(await getConfig(dir, "ticker")).toMatchObject({ interval: 9000, mode: "slow" });
    expect(await readText(join(dir, "cdp.rej"))).toBe("");
    watch.child.kill("SIGTERM");
  });

  it("refuses, before writing anything, a rollback that the current schemas would reject", async () => {
    const schemas = await tempDir();
    await cp(SCHEMAS, schemas, { recursive: true });
    const { dir, watch } = await watched(["ticker:interval:9000", "ticker:interval:1500"], schemas);
    watch.child.kill("SIGTERM");
    await watch.exited;
    const ticker = JSON.parse(await readFile(join(schemas, "ticker.schema.json"), "utf8")) as { properties: { interval: { exclusiveMaximum: number } } };
    ticker.properties.interval.exclusiveMaximum = 5000;
    await writeFile(join(schemas, "ticker.schema.json"), JSON.stringify(ticker));
    const inbox = await readText(join(dir, "cdp.new"));
    const { code, output } = await cdp(["rollback", "--dir", dir, "--schemas", schemas, "--to", "1"]);
    expect(code).toBe(1);
    expect(output).toContain("rollback to revision 1 refused: ticker:interval:9000: ticker.interval must be < 5000, got 9000");
    expect(await readText(join(dir, "cdp.new"))).toBe(inbox);
  });

  it.each([
    [["--to", "9"], "there is no revision 9 (the latest is 1)"],
    [[], "give either --to REV or --last"],
    [["--to", "1", "--last"], "give either --to REV or --last"],
    [["--to", "x"], `--to must be a revision number, got "x"`],
  ])("refuses bad usage %j", async (args, message) => {
    const dir = await dataDir();
    await writeFile(join(dir, "cdp"), "ticker:interval:2000\n");
    const { code, output } = await cdp(["rollback", "--dir", dir, "--schemas", SCHEMAS, ...args]);
    expect(code).toBe(2);
    expect(output).toContain(message);
  });
});

describe("atomic multi-key changes", () => {
  it("changes several keys of an object in one validated step when a rule ties them", async () => {
    const { dir, watch } = await watched([]);
    await appendAndWait(dir, 'db:pool.min:20\ndb:pool:{"min":20,"max":40}\n', 1);
    expect(await readText(join(dir, "cdp.rej"))).toContain("reason: db.pool.max must be >= 20, got 10\ndb:pool.min:20\n");
    expect(await getConfig(dir, "db.pool")).toEqual({ min: 20, max: 40 });
    watch.child.kill("SIGTERM");
  });
});

describe("output into a pipe", () => {
  it("cdp get and cdp history --json print everything before they exit, past the 64 KiB a pipe holds", async () => {
    const dir = await dataDir();
    const names = Array.from({ length: 2000 }, (_, i) => `ticker:name:name-${i}-${"x".repeat(40)}`);
    await writeFile(join(dir, "cdp"), `${names.join("\n")}\nticker:meta:{"blob":"${"y".repeat(200_000)}"}\n`);
    const piped = async (args: string) =>
      (await run("sh", ["-c", `"${process.execPath}" "${CLI}" ${args} --dir "${dir}" --schemas "${SCHEMAS}" | cat`], { maxBuffer: 64 << 20 })).stdout;
    const config = JSON.parse(await piped("get")) as { ticker: { meta: { blob: string } } };
    expect(config.ticker.meta.blob).toHaveLength(200_000);
    const history = JSON.parse(await piped("history --json")) as unknown[];
    expect(history).toHaveLength(2001);
  });
});
