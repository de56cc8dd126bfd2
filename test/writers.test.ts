// What writers leave in the inbox that is not a clean line: half-written lines, bare carriage
// returns, a line of exactly the limit in CRLF, and an inbox that is not a regular file at all.
import { execFile, spawn } from "node:child_process";
import { connect, type Socket } from "node:net";
import { appendFile, mkdir, rm, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { startCdp } from "../src/index.js";
import {
  afterThisTest,
  capturedLogger,
  cdp,
  CLI,
  journalOf,
  readText,
  recordLines,
  runCdp,
  SCHEMAS,
  startWatch,
  tempDir,
  waitUntil,
  dataDir,
  appendAndWait,
} from "./helpers.js";

const run = promisify(execFile);

/** The reasons recorded in cdp.rej, in order. */
async function reasons(dir: string): Promise<string[]> {
  return (await readText(join(dir, "cdp.rej")))
    .split("\n")
    .filter((line) => line.startsWith("# seq="))
    .map((line) => line.replace(/^.* reason: /, ""));
}

describe("lines written without their newline", () => {
  it("cdp push never glues its line to another writer's unterminated one: that one is rejected as cut short", async () => {
    const dir = await dataDir();
    const watch = await startWatch(dir);
    await appendFile(join(dir, "cdp.new"), "ticker:name:half");
    expect((await cdp(["push", "--dir", dir, "ticker:name:pushed"])).code).toBe(0);
    await waitUntil(async () => (await journalOf(dir)).length === 1 && (await reasons(dir)).length === 1);
    expect(await journalOf(dir)).toEqual(["ticker:name:pushed"]);
    expect(await recordLines(join(dir, "cdp.rej"))).toEqual(["ticker:name:half"]);
    expect((await reasons(dir))[0]).toContain("never got its newline");
    watch.child.kill("SIGTERM");
  });

  it("nor does the sidecar: its marker and lines stay lines of their own", async () => {
    const dir = await dataDir();
    const { logger } = capturedLogger();
    const running = await startCdp({ init: true, dir, schemas: SCHEMAS, logger, http: { listen: "127.0.0.1:0" } });
    afterThisTest(() => running.stop());
    await appendFile(join(dir, "cdp.new"), "ticker:name:half");
    const response = await fetch(`${running.url}/v1/changes`, { method: "POST", body: "ticker:name:posted\n", headers: { "content-type": "text/plain" } });
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ lines: [{ line: 1, outcome: "accepted" }] });
    expect(running.get("ticker", "name")).toBe("posted");
    expect(await recordLines(join(dir, "cdp.rej"))).toEqual(["ticker:name:half"]);
  });

  it("cdp push appends normally when the inbox ends in a newline (no stray cut-short line)", async () => {
    const dir = await dataDir();
    await appendFile(join(dir, "cdp.new"), "ticker:name:one\n");
    expect((await cdp(["push", "--dir", dir, "ticker:name:two"])).code).toBe(0);
    expect(await readText(join(dir, "cdp.new"))).toMatch(/^ticker:name:one\n# cdp push id=\S+\n# by: \S+\nticker:name:two\n$/);
  });
});

describe("carriage returns and the length limit", () => {
  it("rejects a line with bare carriage returns inside, with the reason, and applies nothing of it", async () => {
    const dir = await dataDir();
    const watch = await startWatch(dir);
    await appendFile(join(dir, "cdp.new"), "ticker:name:cr1\rticker:name:cr2\rticker:name:cr3\r");
    await appendAndWait(dir, "\nticker:name:later\n", 1);
    expect(await journalOf(dir)).toEqual(["ticker:name:later"]);
    expect((await reasons(dir))[0]).toBe("column 16: a carriage return (\\r) may only end a line, just before its newline");
    watch.child.kill("SIGTERM");
  });

  it("accepts a line of exactly --max-line-bytes that ends in CRLF", async () => {
    const dir = await dataDir();
    const watch = await startWatch(dir, ["--max-line-bytes", "64"]);
    const exact = `ticker:name:${"x".repeat(64 - 12)}`;
    await appendFile(join(dir, "cdp.new"), `${exact}\r\n${exact}x\r\n`);
    await waitUntil(async () => (await journalOf(dir)).length === 1 && (await reasons(dir)).length === 1);
    expect(await journalOf(dir)).toEqual([exact]);
    expect((await reasons(dir))[0]).toBe("line is 65 bytes, over the limit of 64");
    watch.child.kill("SIGTERM");
  });
});

describe("an inbox that is not a regular file", () => {
  it("a FIFO as cdp.new is an outage with the reason: cdp never blocks on it and stops cleanly", async () => {
    const dir = await dataDir();
    await run("mkfifo", [join(dir, "cdp.new")]);
    const watch = await startWatch(dir, ["--max-outage", "600"]);
    await waitUntil(() => watch.output().includes("is a FIFO"));
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
  });

  it("exits 3 naming the FIFO once the outage lasts past --max-outage", async () => {
    const dir = await dataDir();
    await run("mkfifo", [join(dir, "cdp.new")]);
    const watch = await startWatch(dir, ["--max-outage", "1"]);
    expect(await watch.exited).toBe(3);
    expect(watch.output()).toContain(`${join(dir, "cdp.new")} is a FIFO: remove it; cdp reads only a regular file there`);
  });

  it("never follows a symbolic link: nothing of the file it names is read, and it goes on once a real inbox is back", async () => {
    const dir = await dataDir();
    const elsewhere = join(await tempDir(), "secret");
    await writeFile(elsewhere, "ticker:name:from-elsewhere\nroot:x:0:0:root:/root:/bin/bash\n");
    await symlink(elsewhere, join(dir, "cdp.new"));
    const watch = await startWatch(dir, ["--max-outage", "600"]);
    await waitUntil(() => watch.output().includes("is a symbolic link"));
    expect(await readText(join(dir, "cdp.rej"))).toBe("");
    await rm(join(dir, "cdp.new"));
    await writeFile(join(dir, "cdp.new"), "ticker:name:real\n");
    await waitUntil(async () => (await journalOf(dir)).length === 1);
    expect(await journalOf(dir)).toEqual(["ticker:name:real"]);
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
  });

  it("cdp push refuses to write through a symbolic link or into a FIFO (exit 2), and the named file is untouched", async () => {
    const dir = await dataDir();
    const elsewhere = join(await tempDir(), "target");
    await writeFile(elsewhere, "keep\n");
    await symlink(elsewhere, join(dir, "cdp.new"));
    const linked = await cdp(["push", "--dir", dir, "ticker:name:x"]);
    expect(linked.code).toBe(2);
    expect(linked.output).toContain("is a symbolic link");
    expect(await readText(elsewhere)).toBe("keep\n");
    await rm(join(dir, "cdp.new"));
    await run("mkfifo", [join(dir, "cdp.new")]);
    const fifo = await cdp(["push", "--dir", dir, "ticker:name:x"]);
    expect(fifo.code).toBe(2);
    expect(fifo.output).toContain("is a FIFO");
    await rm(join(dir, "cdp.new"));
    await mkdir(join(dir, "cdp.new"));
    const directory = await cdp(["push", "--dir", dir, "ticker:name:x"]);
    expect(directory.code).toBe(2);
  });
});

describe("schema patterns cannot hang cdp", () => {
  async function patternSchemas(pattern: string, extra: Record<string, unknown> = {}): Promise<string> {
    const dir = await dataDir();
    const schema = {
      type: "object",
      properties: {
        r: { type: "string", pattern, default: "a" },
        p: { type: "string", default: "x" },
        v: { type: "string", pattern: { $data: "1/p" } },
        ...extra,
      },
    };
    await writeFile(join(dir, "app.schema.json"), JSON.stringify(schema));
    return dir;
  }

  it("matches ^(a+)+$ against 40 a's and a '!' at once (RE2, linear time): rejected, and the next line flows", async () => {
    const schemas = await patternSchemas("^(a+)+$");
    const dir = await dataDir();
    const watch = runCdp(["watch", "--dir", dir, "--schemas", schemas]);
    await waitUntil(() => watch.output().includes("cdp is watching"));
    await appendAndWait(dir, `app:r:${"a".repeat(40)}!\napp:r:${"a".repeat(50_000)}\n`, 1);
    expect((await reasons(dir))[0]).toContain('app.r must match pattern "^(a+)+$"');
    // a pattern taken from the config itself ($data) goes through the same engine
    await appendAndWait(dir, `app:p:^(a+)+$\napp:v:${"a".repeat(40)}!\napp:v:aaa\n`, 3);
    expect((await reasons(dir))[1]).toContain("app.v must match pattern");
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
  });

  it("refuses at start a schema pattern RE2 cannot run (a backreference), naming file and pattern (exit 2)", async () => {
    const schemas = await patternSchemas("^(a)\\1$");
    const result = await cdp(["watch", "--dir", await dataDir(), "--schemas", schemas]);
    expect(result.code).toBe(2);
    expect(result.output).toContain(`${join(schemas, "app.schema.json")}: not a valid JSON Schema: the pattern "^(a)\\\\1$" cannot be used`);
  });
});

describe("secrets at every depth", () => {
  it("never shows a secret in a reason, a log line, cdp.rej, history or the sidecar, however deep it sits", async () => {
    const schemas = await tempDir();
    await writeFile(
      join(schemas, "sec.schema.json"),
      JSON.stringify({
        type: "object",
        maxProperties: 3,
        properties: {
          password: { type: "string", writeOnly: true },
          a: { type: "string" },
          b: { type: "string" },
          creds: { type: "object", properties: { user: { type: "string" }, password: { type: "string", writeOnly: true } } },
        },
      }),
    );
    const dir = await dataDir();
    const { logger, lines } = capturedLogger();
    const running = await startCdp({ init: true, dir, schemas, logger, http: { listen: "127.0.0.1:0" } });
    afterThisTest(() => running.stop());
    await appendFile(join(dir, "cdp.new"), 'sec:password:hunter2-SECRET\nsec:creds:{"user":"u","password":"hunter2-NESTED"}\nsec:a:x\nsec:b:y\n');
    await waitUntil(async () => running.revision === 3 && (await reasons(dir)).length === 1);
    const [reason] = await reasons(dir);
    expect(reason).toContain("sec must NOT have more than 3 properties");
    expect(reason).toContain('"password":"[secret]"');
    const everything = [
      await readText(join(dir, "cdp.rej")).then((text) =>
        text
          .split("\n")
          .filter((line) => line.startsWith("#"))
          .join("\n"),
      ),
      JSON.stringify(lines),
      await (await fetch(`${running.url}/v1/rejections`)).text(),
      await (await fetch(`${running.url}/v1/history`)).text(),
      await (await fetch(`${running.url}/v1/config`)).text(),
      (await cdp(["history", "--dir", dir, "--schemas", schemas])).output,
      (await cdp(["history", "--json", "--dir", dir, "--schemas", schemas])).output,
    ].join("\n");
    expect(everything).not.toContain("hunter2");
    expect(await (await fetch(`${running.url}/v1/config/sec/creds`)).json()).toEqual({ user: "u" });
  });
});

describe("connections cannot starve the pipeline of descriptors", () => {
  it("with 400 idle connections under a limit of 256 descriptors, lines still flow; idle ones are closed", async () => {
    const dir = await dataDir();
    const child = spawn(
      "prlimit",
      ["--nofile=256:256", process.execPath, CLI, "watch", "--dir", dir, "--schemas", SCHEMAS, "--http", "127.0.0.1:0", "--http-timeout", "2"],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let output = "";
    child.stdout.on("data", (data: Buffer) => (output += data.toString()));
    child.stderr.on("data", (data: Buffer) => (output += data.toString()));
    const exited = new Promise((resolve) => child.on("exit", resolve));
    afterThisTest(async () => {
      child.kill("SIGKILL");
      await exited;
    });
    await waitUntil(() => /"url":"http:\/\/127\.0\.0\.1:(\d+)"/.test(output));
    const port = Number(/"url":"http:\/\/127\.0\.0\.1:(\d+)"/.exec(output)![1]);
    const sockets = await Promise.all(
      Array.from(
        { length: 400 },
        () =>
          new Promise<Socket>((resolve) => {
            const socket = connect(port, "127.0.0.1");
            socket.on("error", () => undefined);
            socket.resume(); // read: a socket that never reads never sees the server close it
            socket.once("connect", () => resolve(socket));
            socket.once("close", () => resolve(socket));
          }),
      ),
    );
    afterThisTest(async () => {
      for (const socket of sockets) socket.destroy();
    });
    await appendAndWait(dir, "ticker:interval:1500\n", 1);
    expect(child.exitCode).toBeNull();
    // the idle connections are closed after --http-timeout; the sidecar answers again
    await waitUntil(() => sockets.every((socket) => socket.destroyed));
    const health = await fetch(`http://127.0.0.1:${port}/healthz`);
    expect(health.status).toBe(200);
    expect(output).toContain("refusing connections");
  });
});
