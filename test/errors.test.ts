// The errors a newcomer meets: each one sentence, saying where and what, with the fix.
import { createServer } from "node:net";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { CLI, cdp, dataDir, runCdp, startWatch, tempDir, waitUntil } from "./helpers.js";
import { spawn } from "node:child_process";

describe("errors that explain", () => {
  it("names the JSON Schema keyword and path that are wrong, not ajv's list of every branch", async () => {
    const schemas = await tempDir();
    await writeFile(join(schemas, "ticker.schema.json"), JSON.stringify({ type: "object", properties: { interval: { type: "int" } } }));
    const { code, output } = await cdp(["check", "--schemas", schemas, "-"], "");
    expect(code).toBe(2);
    expect(output).toContain(
      `${join(schemas, "ticker.schema.json")}: not a valid JSON Schema: at /properties/interval/type: "type" must be one of "array", "boolean", "integer", "null", "number", "object", "string", got "int"`,
    );
    expect(output).not.toContain("anyOf");
  });

  it("places a JSON syntax error in a schema at line:column", async () => {
    const schemas = await tempDir();
    await writeFile(join(schemas, "ticker.schema.json"), '{\n  "type": "object",\n  "properties": {},\n}\n');
    const { code, output } = await cdp(["check", "--schemas", schemas, "-"], "");
    expect(code).toBe(2);
    expect(output).toMatch(new RegExp(`${join(schemas, "ticker.schema.json")}:4:1: not valid JSON: `));
  });

  it.each([
    [["wacth"], 'unknown command "wacth" (did you mean watch?)'],
    [["watch", "--schema", "s"], "unknown option --schema (did you mean --schemas?)"],
    [["push", "--dri", "d", "x:y:1"], "unknown option --dri (did you mean --dir?)"],
    [["watch", "--dir"], "--dir needs a value"],
  ])("suggests what was meant for %j", async (args, message) => {
    const { code, output } = await cdp(args);
    expect(code).toBe(2);
    expect(output).toContain(`cdp: ${message}\n`);
    expect(output).not.toContain("To specify a positional argument");
  });

  it("refuses a number no timer or revision takes, before anything is done: 1e308 seconds, 0x10", async () => {
    const dir = await dataDir();
    const cases: [string[], string][] = [
      [
        ["rollout", "start", "--dir", dir, "--hosts", "a", "--bake", "1e308", "ticker:interval:1500"],
        '--bake must be a positive number of seconds up to 2592000 (30 days), got "1e308"',
      ],
      [
        ["rollout", "start", "--dir", dir, "--steps", "50,100", "--every", "2592001", "ticker:interval:1500"],
        "--every must be a positive number of seconds up to 2592000 (30 days)",
      ],
      [["watch", "--dir", dir, "--max-outage", "3000000"], '--max-outage must be a positive number of seconds up to 2147483 (about 24.9 days), got "3000000"'],
      [["watch", "--dir", dir, "--poll-interval", "2147483648"], '--poll-interval must be a positive whole number up to 2147483647, got "2147483648"'],
      [["watch", "--dir", dir, "--poll-interval", "0x10"], '--poll-interval must be a positive whole number up to 2147483647, got "0x10"'],
      [["rollback", "--dir", dir, "--to", "0x10"], '--to must be a revision number, got "0x10"'],
    ];
    for (const [args, message] of cases) {
      const { code, output } = await cdp(args);
      expect(code, args.join(" ")).toBe(2);
      expect(output).toContain(message);
    }
    expect(await readFile(join(dir, "cdp.new"), "utf8").catch(() => "")).toBe("");
  });

  it("stops quietly when the reader of its output goes away (cdp status | head -1): no EPIPE trace", async () => {
    const dir = await dataDir();
    for (const command of ["status", "history --json", "rollout status"]) {
      // `true` reads nothing and exits at once: every write of cdp meets a closed pipe
      const output = await new Promise<string>((resolve) => {
        const child = spawn("bash", ["-c", `"${process.execPath}" "${CLI}" ${command} --dir "${dir}" | true; echo "exit \${PIPESTATUS[0]}"`]);
        let text = "";
        child.stdout.on("data", (data: Buffer) => (text += data.toString()));
        child.stderr.on("data", (data: Buffer) => (text += data.toString()));
        child.on("exit", () => resolve(text));
      });
      expect(output, command).toMatch(/exit 0\n$/);
      expect(output, command).not.toMatch(/EPIPE|\n\s+at /);
    }
  });

  it("answers cdp help COMMAND and cdp -v", async () => {
    expect((await cdp(["help", "push"])).output).toMatch(/^Usage: cdp push /);
    expect((await cdp(["-v"])).output).toMatch(/^\d+\.\d+\.\d+\n$/);
  });

  it("does not send the operator to --help for what is not a usage error: a port in use, a running cdp", async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
    const port = (blocker.address() as { port: number }).port;
    try {
      const dir = await dataDir();
      const inUse = await cdp(["watch", "--dir", dir, "--http", `127.0.0.1:${port}`]);
      expect(inUse.code).toBe(2);
      expect(inUse.output).toContain(`cannot listen on 127.0.0.1:${port}: the address is in use`);
      expect(inUse.output).not.toContain("--help");
    } finally {
      blocker.close();
    }
    const dir = await dataDir();
    const first = await startWatch(dir);
    const second = await cdp(["watch", "--dir", dir]);
    expect(second.code).toBe(2);
    expect(second.output).toContain(`is in use by another cdp (pid ${first.child.pid})`);
    expect(second.output).not.toContain("--help");
  });

  it("says so when it takes over the lock of a cdp that was killed", async () => {
    const dir = await dataDir();
    const killed = await startWatch(dir);
    killed.child.kill("SIGKILL");
    await killed.exited;
    const restarted = runCdp(["watch", "--dir", dir]);
    await waitUntil(() => restarted.output().includes("cdp is watching"));
    expect(restarted.output()).toContain(`took over the lock of ${dir} from pid ${killed.child.pid}, which is gone`);
  });

  it("names an unavailable inbox's cause once (no ENOENT: ENOENT:)", async () => {
    const parent = await tempDir();
    const dir = join(parent, "data");
    await mkdir(dir);
    const watch = await startWatch(dir, ["--max-outage", "1"]);
    await rm(dir, { recursive: true, maxRetries: 10, retryDelay: 20 }); // cdp may be writing in it (cdp.watcher) at that moment
    expect(await watch.exited).toBe(3);
    expect(watch.output()).toContain("has been unavailable for more than 1 s (ENOENT: no such file or directory");
    expect(watch.output()).not.toContain("ENOENT: ENOENT");
  });
});
