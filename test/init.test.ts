// A data directory is created once, on purpose (`cdp init`), and nothing else ever creates or
// silently resets one; settings come from flags, the environment and what init recorded.
import { spawn } from "node:child_process";
import { readFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { CLI, cdp, dataDir, runCdp, SCHEMAS, startWatch, tempDir, waitUntil, appendAndWait } from "./helpers.js";

/** Run the real `cdp` with extra environment variables. */
async function cdpWithEnv(args: string[], env: Record<string, string>, stdin = ""): Promise<{ code: number | null; output: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ["pipe", "pipe", "pipe"] });
  child.stdin.end(stdin);
  let output = "";
  child.stdout.on("data", (data: Buffer) => (output += data.toString()));
  child.stderr.on("data", (data: Buffer) => (output += data.toString()));
  const code = await new Promise<number | null>((resolve) => child.on("exit", resolve));
  return { code, output };
}

describe("cdp init", () => {
  it("creates and marks the data directory, records the schemas, and changes nothing when run again", async () => {
    const dir = join(await tempDir(), "var", "cdp");
    const first = await cdp(["init", "--dir", dir, "--schemas", SCHEMAS]);
    expect(first.code).toBe(0);
    expect(first.output).toContain(`initialised the data directory ${dir}`);
    expect(first.output).toContain(`cdp watch --dir ${dir}`);
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    const settings = await readFile(join(dir, "cdp.conf"), "utf8");
    expect(JSON.parse(settings)).toMatchObject({ cdp: 1, schemas: SCHEMAS });
    const again = await cdp(["init", "--dir", dir, "--schemas", SCHEMAS]);
    expect(again.code).toBe(0);
    expect(again.output).toContain("already initialised: nothing changed");
    expect(await readFile(join(dir, "cdp.conf"), "utf8")).toBe(settings);
  });

  it("refuses other schemas for an initialised directory, an empty schema directory and a missing one (exit 2)", async () => {
    const dir = join(await tempDir(), "data");
    expect((await cdp(["init", "--dir", dir, "--schemas", SCHEMAS])).code).toBe(0);
    const other = await tempDir();
    await writeFile(join(other, "ticker.json"), "{}");
    const empty = await cdp(["init", "--dir", join(await tempDir(), "d"), "--schemas", other]);
    expect(empty.code).toBe(2);
    expect(empty.output).toContain(`no <app>.schema.json in the schema directory ${other} (ignored: ticker.json: a schema's file name is <app>.schema.json)`);
    const missing = await cdp(["init", "--dir", join(await tempDir(), "d"), "--schemas", "./nope"]);
    expect(missing.code).toBe(2);
    expect(missing.output).toContain("cannot read the schema directory");
    expect(missing.output).toContain("it does not exist");
    await writeFile(join(other, "ticker.schema.json"), JSON.stringify({ type: "object", properties: { interval: { type: "integer" } } }));
    const changed = await cdp(["init", "--dir", dir, "--schemas", other]);
    expect(changed.code).toBe(2);
    expect(changed.output).toContain(`is already initialised with the schemas ${SCHEMAS}`);
  });

  it("refuses to adopt a journal that does not hold under the schemas it is given", async () => {
    const dir = await tempDir();
    await writeFile(join(dir, "cdp"), "ticker:interval:100\n");
    const result = await cdp(["init", "--dir", dir, "--schemas", SCHEMAS]);
    expect(result.code).toBe(2);
    expect(result.output).toContain("ticker.interval must be > 200, got 100");
    expect(await stat(join(dir, "cdp.conf")).catch(() => undefined)).toBeUndefined();
  });
});

describe("a directory that is not initialised", () => {
  it.each([
    ["push", ["ticker:interval:1500"]],
    ["get", []],
    ["history", []],
    ["watch", []],
    ["rollback", ["--last"]],
    ["compact", []],
  ])("is refused by cdp %s (exit 2) with the fix, and nothing is created", async (command, rest) => {
    const typo = join(await tempDir(), "nw");
    const result = await cdp([command, "--dir", typo, "--schemas", SCHEMAS, ...rest]);
    expect(result.code).toBe(2);
    expect(result.output).toContain(`the data directory ${typo} does not exist: create it with 'cdp init --dir ${typo} --schemas DIR'`);
    expect(await stat(typo).catch(() => undefined)).toBeUndefined();
  });

  it("an existing empty directory (an unmounted volume's mount point) is refused, not served as defaults", async () => {
    const mountPoint = await tempDir();
    for (const command of ["watch", "get", "push"]) {
      const result = await cdp([command, "--dir", mountPoint, "--schemas", SCHEMAS, ...(command === "push" ? ["ticker:interval:1500"] : [])]);
      expect(result.code, command).toBe(2);
      expect(result.output).toContain(`${mountPoint} is not an initialised cdp data directory (no cdp.conf)`);
      expect(result.output).toContain("is the volume mounted?");
    }
    expect(await stat(join(mountPoint, "cdp.new")).catch(() => undefined)).toBeUndefined();
  });

  it("a data directory removed under a running cdp: exit 3, and a restart refuses it instead of starting empty", async () => {
    const parent = await tempDir();
    const dir = join(parent, "data");
    const watch = await startWatch(dir, ["--max-outage", "1"]);
    await appendAndWait(dir, "ticker:interval:1500\n", 1);
    await rm(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 20 }); // cdp may be writing in it at that moment
    expect(await watch.exited).toBe(3);
    const restarted = await cdp(["watch", "--dir", dir, "--schemas", SCHEMAS]);
    expect(restarted.code).toBe(2);
    expect(restarted.output).toContain("does not exist");
    expect(await stat(dir).catch(() => undefined)).toBeUndefined();
  });

  it("a directory an earlier cdp wrote (a journal, no marker) is adopted at its first start, with a log line", async () => {
    const dir = await tempDir();
    await writeFile(join(dir, "cdp"), "ticker:interval:1500\n");
    const watch = runCdp(["watch", "--dir", dir, "--schemas", SCHEMAS]);
    await waitUntil(() => watch.output().includes("cdp is watching"));
    expect(watch.output()).toContain("written by an earlier cdp: marked it as a data directory");
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
    expect(JSON.parse(await readFile(join(dir, "cdp.conf"), "utf8"))).toMatchObject({ cdp: 1 });
  });
});

describe("settings in one place", () => {
  it("read commands need only the data directory: the schemas are those recorded by init", async () => {
    const dir = join(await tempDir(), "data");
    expect((await cdp(["init", "--dir", dir, "--schemas", SCHEMAS])).code).toBe(0);
    await writeFile(join(dir, "cdp"), "ticker:interval:1500\n");
    const get = await cdp(["get", "--dir", dir, "ticker.interval"]);
    expect(get).toEqual({ code: 0, output: "1500\n" });
    const history = await cdp(["history", "--dir", dir, "--json"]);
    expect(history.code).toBe(0);
    expect(JSON.parse(history.output)).toEqual([expect.objectContaining({ revision: 1, key: "interval", value: 1500 })]);
  });

  it("takes CDP_DIR, CDP_SCHEMAS and CDP_<OPTION> from the environment; flags win", async () => {
    const dir = join(await tempDir(), "data");
    expect((await cdpWithEnv(["init"], { CDP_DIR: dir, CDP_SCHEMAS: SCHEMAS })).code).toBe(0);
    expect((await cdpWithEnv(["push", "ticker:interval:1500"], { CDP_DIR: dir })).code).toBe(0);
    expect(await readFile(join(dir, "cdp.new"), "utf8")).toMatch(/\nticker:interval:1500\n$/);
    const tooLong = await cdpWithEnv(["check", "-"], { CDP_SCHEMAS: SCHEMAS, CDP_MAX_LINE_BYTES: "10" }, "ticker:interval:1500\n");
    expect(tooLong.code).toBe(1);
    expect(tooLong.output).toContain("stdin:1: line is 20 bytes, over the limit of 10");
    const flagWins = await cdpWithEnv(["watch", "--dir", dir, "--poll-interval", "soon"], { CDP_POLL_INTERVAL: "100" });
    expect(flagWins.output).toContain('--poll-interval must be a positive whole number up to 2147483647, got "soon"');
    const badSwitch = await cdpWithEnv(["watch", "--dir", dir], { CDP_POLL_ONLY: "maybe" });
    expect(badSwitch.code).toBe(2);
    expect(badSwitch.output).toContain('CDP_POLL_ONLY is a switch: 1 or 0, got "maybe"');
  });

  it("lists the environment variables in --help", async () => {
    const { output } = await cdp(["--help"]);
    expect(output).toContain("CDP_DIR, CDP_SCHEMAS");
    expect(output).toContain("cdp init   --dir D --schemas S");
  });
});

describe("cdp get and secrets", () => {
  it("masks secret (writeOnly) values and says so, unless --show-secrets", async () => {
    const dir = await dataDir();
    await writeFile(join(dir, "cdp"), "ticker:token:s3cret-value\nticker:interval:1500\n");
    const all = await cdp(["get", "--dir", dir]);
    expect(all.code).toBe(0);
    expect(all.output).not.toContain("s3cret-value");
    expect(all.output).toContain('"token": "[secret]"');
    expect(all.output).toContain("secret (writeOnly) values are shown as [secret]; --show-secrets shows them");
    expect((await cdp(["get", "--dir", dir, "ticker.token"])).output).toContain('"[secret]"');
    const shown = await cdp(["get", "--dir", dir, "--show-secrets", "ticker.token"]);
    expect(shown).toEqual({ code: 0, output: '"s3cret-value"\n' });
  });
});
