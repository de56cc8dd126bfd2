// Commands that tell what happened: cdp push waits for each line's outcome; every change records
// who made it and why, and history, events and the sidecar show both.
import { execFileSync } from "node:child_process";
import { chmod, chown, mkdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { userInfo } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { startCdp } from "../src/index.js";
import { afterThisTest, capturedLogger, cdp, dataDir, runCdp, SCHEMAS, startWatch, tempDir, appendAndWait, waitUntil } from "./helpers.js";

describe("cdp push tells what became of each line", () => {
  it("waits for the running watcher and prints each outcome; exit 1 when any line is rejected", async () => {
    const dir = await dataDir();
    const watch = await startWatch(dir);
    const result = await cdp(["push", "--dir", dir, "ticker:interval:1500", "ticker:interval:100", "# just a note", "broken"]);
    expect(result.code).toBe(1);
    expect(result.output).toContain("ticker:interval:1500  accepted at revision 1\n");
    expect(result.output).toContain("ticker:interval:100  rejected: ticker.interval must be > 200, got 100\n");
    expect(result.output).toContain("# just a note  ignored (a comment)\n");
    expect(result.output).toContain("broken  rejected: column 7: expected ':', found end of line");
    const accepted = await cdp(["push", "--dir", dir, "ticker:interval:2500"]);
    expect(accepted.code).toBe(0);
    expect(accepted.output).toContain("ticker:interval:2500  accepted at revision 2\n");
    watch.child.kill("SIGTERM");
    await watch.exited;
    const queued = await cdp(["push", "--dir", dir, "ticker:interval:3500"]);
    expect(queued.code).toBe(0);
    expect(queued.output).toContain(`no watcher is running on ${dir}: the lines wait in the inbox`);
    expect(queued.output).toContain("ticker:interval:3500  queued; would be accepted now\n");
    expect((await cdp(["push", "--no-wait", "--dir", dir, "ticker:interval:4500"])).output).not.toContain("watcher");
  });

  it("with no watcher running, judges the queued lines against the schemas and config in force: exit 1 for any that would be rejected", async () => {
    const dir = await dataDir();
    const queued = await cdp(["push", "--dir", dir, "ticker:interval:abc", "ticker:interval:1500", "ticker:interval:abc"]);
    expect(queued.code).toBe(1);
    expect(queued.output).toContain(`no watcher is running on ${dir}`);
    expect(queued.output).toContain("ticker:interval:abc  queued; would be rejected now: ticker.interval must be an integer");
    expect(queued.output).toContain("ticker:interval:1500  queued; would be accepted now\n");
    expect(queued.output).toContain("cdp: 2 lines would be rejected by the schemas in force");
    // they are queued all the same, as echo >> would: the watcher judges them when it starts
    const watch = await startWatch(dir);
    await appendAndWait(dir, "", 1);
    expect((await readFile(join(dir, "cdp.rej"), "utf8")).match(/^ticker:interval:abc$/gm)).toHaveLength(2);
    watch.child.kill("SIGTERM");
    await watch.exited;
  });

  it("keeps the data directory's owner: root's push beside a watcher run as its service user; another user is told whom to run as", async () => {
    const nobody = {
      uid: Number(execFileSync("id", ["-u", "nobody"], { encoding: "utf8" })),
      gid: Number(execFileSync("id", ["-g", "nobody"], { encoding: "utf8" })),
    };
    const root = await tempDir();
    await chmod(root, 0o755); // the service user reaches its data directory inside
    const dir = join(root, "data");
    await mkdir(dir, { mode: 0o700 });
    await chown(dir, nobody.uid, nobody.gid); // as a package's postinst makes it
    const init = runCdp(["init", "--dir", dir, "--schemas", SCHEMAS], nobody);
    expect(await init.exited).toBe(0);
    const watch = runCdp(["watch", "--dir", dir], nobody);
    await waitUntil(() => watch.output().includes("cdp is watching"));
    const pushed = await cdp(["push", "--dir", dir, "ticker:interval:1500"]); // as root
    expect(pushed.output).toContain("ticker:interval:1500  accepted at revision 1\n");
    expect(pushed.code).toBe(0);
    expect(await stat(join(dir, "cdp.new"))).toMatchObject({ uid: nobody.uid, gid: nobody.gid });
    await appendAndWait(dir, "ticker:interval:2500\n", 2); // the watcher still reads its inbox
    expect(watch.child.exitCode).toBe(null);
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
    // root's compaction and init keep the owner too
    expect((await cdp(["compact", "--dir", dir, "--keep", "0"])).code).toBe(0);
    expect(await stat(join(dir, "cdp"))).toMatchObject({ uid: nobody.uid });
    // a user who is neither root nor the owner would create an inbox the watcher cannot read
    // (here daemon, let into the directory by its group to read the settings)
    await rm(join(dir, "cdp.new"));
    const daemon = {
      uid: Number(execFileSync("id", ["-u", "daemon"], { encoding: "utf8" })),
      gid: Number(execFileSync("id", ["-g", "daemon"], { encoding: "utf8" })),
    };
    for (const [path, mode] of [
      [dir, 0o750],
      [join(dir, "cdp.conf"), 0o640],
    ] as const) {
      await chown(path, nobody.uid, daemon.gid);
      await chmod(path, mode);
    }
    const refused = runCdp(["push", "--dir", dir, "--no-wait", "ticker:interval:3500"], daemon);
    expect(await refused.exited).toBe(2);
    expect(refused.output()).toContain(
      `cdp push as daemon would create ${join(dir, "cdp.new")} that the watcher, running as nobody (the data directory's owner), could not read: run it as nobody`,
    );
  });

  it("says a line over the length limit was rejected as such (cdp.rej records it cut short)", async () => {
    const dir = await dataDir();
    const watch = await startWatch(dir);
    const long = `ticker:name:${"x".repeat(70_000)}`;
    const result = await cdp(["push", "--dir", dir, long, "ticker:interval:1500"]);
    expect(result.code).toBe(1);
    expect(result.output).toContain(`${long}  rejected: `);
    expect(result.output).toMatch(/rejected: .*(longer|limit|65536)/);
    expect(result.output).not.toContain("ignored (a comment)");
    expect(result.output).toContain("ticker:interval:1500  accepted at revision 1\n");
    watch.child.kill("SIGTERM");
    await watch.exited;
  });
});

describe("who made a change, and why", () => {
  it("records the pushing user and --reason, a '# reason:' comment written by hand, and shows them in history", async () => {
    const dir = await dataDir();
    const watch = await startWatch(dir);
    expect((await cdp(["push", "--dir", dir, "--reason", "ticket 42: slower ticks", "ticker:interval:1500"])).code).toBe(0);
    await appendAndWait(dir, "# by: ops-bot\n# reason: nightly reset\nticker:interval:1000\nticker:name:no-reason\n", 3);
    const history = JSON.parse((await cdp(["history", "--dir", dir, "--json"])).output) as { revision: number; by?: string; reason?: string }[];
    expect(history.map(({ revision, by, reason }) => ({ revision, by, reason }))).toEqual([
      { revision: 3, by: undefined, reason: undefined }, // a directive covers the next change line only
      { revision: 2, by: "ops-bot", reason: "nightly reset" },
      { revision: 1, by: process.env.SUDO_USER || userInfo().username, reason: "ticket 42: slower ticks" },
    ]);
    const table = (await cdp(["history", "--dir", dir])).output;
    expect(table).toContain("1500 → 1000  by ops-bot  (nightly reset)");
    watch.child.kill("SIGTERM");
  });

  it("over HTTP: the token's name and X-Cdp-Reason, in the event stream and /v1/history", async () => {
    const tokens = join(await tempDir(), "tokens");
    await writeFile(tokens, "write write-token-0123456789abcdef deploy-bot\nread read-token-0123456789abcdef\n", { mode: 0o600 });
    const dir = await dataDir();
    const running = await startCdp({ dir, schemas: SCHEMAS, logger: capturedLogger().logger, http: { listen: "127.0.0.1:0", tokenFile: tokens } });
    afterThisTest(() => running.stop());
    const heard: { by?: string; reason?: string }[] = [];
    running.subscribe("ticker", ({ by, reason }) => void heard.push({ by, reason }));
    const response = await fetch(`${running.url}/v1/changes`, {
      method: "POST",
      body: "ticker:interval:1500\nticker:name:x\n",
      headers: { "content-type": "text/plain", authorization: "Bearer write-token-0123456789abcdef", "x-cdp-reason": "release 7" },
    });
    expect(response.status).toBe(200);
    expect(((await response.json()) as { lines: unknown[] }).lines).toHaveLength(2);
    expect(heard).toEqual([
      { by: "deploy-bot", reason: "release 7" },
      { by: "deploy-bot", reason: "release 7" },
    ]);
    const history = (await (await fetch(`${running.url}/v1/history`, { headers: { authorization: "Bearer read-token-0123456789abcdef" } })).json()) as object[];
    expect(history[0]).toMatchObject({ revision: 2, by: "deploy-bot", reason: "release 7" });
  });
});

describe("cdp status", () => {
  it("says whether a watcher runs (pid, sidecar), the revision, the lines waiting, the last rejection and the schemas", async () => {
    const dir = await dataDir();
    const watch = await startWatch(dir, ["--http", "127.0.0.1:0"]);
    await cdp(["push", "--dir", dir, "ticker:interval:1500", "ticker:interval:100"]);
    const running = JSON.parse((await cdp(["status", "--dir", dir, "--json"])).output) as Record<string, unknown>;
    expect(running).toMatchObject({
      dir,
      watcher: { running: true, pid: watch.child.pid, url: expect.stringMatching(/^http:\/\/127\.0\.0\.1:\d+$/) },
      revision: 1,
      waiting: 0,
      lastRejection: { source: expect.stringMatching(/^cdp\.new:\d+$/), reason: "ticker.interval must be > 200, got 100" },
      apps: expect.arrayContaining([
        { app: "ticker", file: join(SCHEMAS, "ticker.schema.json"), version: null, sha256: expect.stringMatching(/^[0-9a-f]{12}$/) },
      ]),
    });
    watch.child.kill("SIGTERM");
    await watch.exited;
    await cdp(["push", "--no-wait", "--dir", dir, "ticker:interval:2000", "ticker:interval:3000"]);
    const stopped = await cdp(["status", "--dir", dir]);
    expect(stopped.code).toBe(0);
    expect(stopped.output).toMatch(/^watcher\s+not running$/m);
    expect(stopped.output).toMatch(/^revision\s+1$/m);
    // each pushed line follows its `# by:` comment (and the push's id before the first): 5 lines
    expect(stopped.output).toMatch(new RegExp(`^inbox\\s+5 lines waiting in ${join(dir, "cdp.new")}$`, "m"));
  });
});
