// The remote client: a process beside a sidecar reads and subscribes as if cdp were embedded.
import { spawn } from "node:child_process";
import { appendFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { CdpError, connectCdp, startCdp, type ChangeEvent, type RemoteCdp } from "../src/index.js";
import { afterThisTest, capturedLogger, SCHEMAS, tempDir, waitUntil, dataDir } from "./helpers.js";

const DEMO = fileURLToPath(new URL("../dist/examples/ticker/main.js", import.meta.url));
const PYTHON_SUBSCRIBER = fileURLToPath(new URL("../examples/sidecar/subscriber.py", import.meta.url));

/** Start a process whose output the test reads; it is stopped after the test. */
function run(command: string, args: string[], env: Record<string, string> = {}) {
  const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout.on("data", (data: Buffer) => (output += data.toString()));
  child.stderr.on("data", (data: Buffer) => (output += data.toString()));
  const exited = new Promise((resolve) => child.on("exit", resolve));
  afterThisTest(async () => {
    child.kill("SIGTERM");
    await exited;
  });
  return () => output;
}

async function sidecar(dir: string, listen = "127.0.0.1:0", tokenFile?: string) {
  const cdp = await startCdp({ init: true, dir, schemas: SCHEMAS, logger: capturedLogger().logger, http: { listen, tokenFile } });
  afterThisTest(() => cdp.stop());
  return cdp;
}

async function connect(url: string, token?: string): Promise<RemoteCdp> {
  const remote = await connectCdp({ url, token, logger: capturedLogger().logger });
  afterThisTest(() => remote.stop());
  return remote;
}

describe("connectCdp", () => {
  it("reads the sidecar's configuration synchronously and hears each change, secrets left out", async () => {
    const dir = await dataDir();
    const server = await sidecar(dir);
    await appendFile(join(dir, "cdp.new"), "ticker:interval:1500\nticker:token:s3cret-value\n");
    await waitUntil(() => server.revision === 2);

    const remote = await connect(server.url!);
    expect(remote.revision).toBe(2);
    expect(remote.get("ticker", "interval")).toBe(1500);
    expect(remote.get("ticker", "token")).toBeUndefined();
    expect(remote.snapshot().apps.db).toEqual(server.snapshot().apps.db);

    const heard: ChangeEvent[] = [];
    remote.subscribe("ticker", "interval", (event) => void heard.push(event));
    const appHeard: string[] = [];
    remote.subscribe("db", ({ key }) => void appHeard.push(key));
    await appendFile(join(dir, "cdp.new"), 'ticker:interval:1600\ndb:pool:{"min":2,"max":4}\nticker:token:0ther-secret\n');
    await waitUntil(() => remote.revision === 5);
    expect(heard).toHaveLength(1);
    expect(heard[0]).toMatchObject({ app: "ticker", key: "interval", value: 1600, previous: 1500, revision: 3, source: "cdp.new:3" });
    expect(heard[0]!.veto("no")).toBe(false); // only the embedded table can take a change back
    expect(appHeard).toEqual(["pool"]);
    expect(remote.get("db", "pool.max")).toBe(4);
    expect(remote.get("ticker", "token")).toBeUndefined();
  });

  it("reconnects after the sidecar restarts and catches up on every change it missed, in order", async () => {
    const dir = await dataDir();
    const first = await sidecar(dir);
    const remote = await connect(first.url!);
    const values: unknown[] = [];
    remote.subscribe("ticker", "interval", ({ value }) => void values.push(value));
    await first.stop();
    await waitUntil(() => !remote.connected);

    // changes land while the sidecar is down; they are applied when it starts again
    await appendFile(join(dir, "cdp.new"), "ticker:interval:1100\nticker:interval:1200\n");
    const second = await sidecar(dir, new URL(first.url!).host);
    await appendFile(join(dir, "cdp.new"), "ticker:interval:1300\n");
    await waitUntil(() => values.length === 3);
    expect(values).toEqual([1100, 1200, 1300]);
    expect(remote.revision).toBe(3);
    expect(remote.get("ticker", "interval")).toBe(second.get("ticker", "interval"));
  });

  it("says why it cannot connect: nothing listening, or a token refused", async () => {
    const dir = await dataDir();
    const tokens = join(await tempDir(), "tokens");
    await writeFile(tokens, "read remote-read-token-0123456789\n", { mode: 0o600 });
    const server = await sidecar(dir, "127.0.0.1:0", tokens);

    const closed = await startCdp({ init: true, dir: await tempDir(), schemas: SCHEMAS, logger: capturedLogger().logger, http: { listen: "127.0.0.1:0" } });
    await closed.stop(); // nothing listens on its port now
    await expect(connectCdp({ url: closed.url!, logger: capturedLogger().logger })).rejects.toThrow(
      `cannot reach cdp at ${closed.url}/v1/config: connect ECONNREFUSED`,
    );
    const refused = connectCdp({ url: server.url!, token: "wrong-token-0123456789", logger: capturedLogger().logger });
    await expect(refused).rejects.toBeInstanceOf(CdpError);
    await expect(refused).rejects.toThrow("answered 401: a valid bearer token is required (Authorization: Bearer TOKEN)");
    const remote = await connect(server.url!, "remote-read-token-0123456789");
    expect(remote.get("ticker", "interval")).toBe(1000);
  });

  it("runs the ticker demo as a separate process beside a sidecar", async () => {
    const dir = await dataDir();
    const server = await sidecar(dir);
    const output = run(process.execPath, [DEMO], { CDP_URL: server.url! });
    await waitUntil(() => output().includes("Next tick in 1000 ms!"));
    expect(output()).toContain(`curl --data-binary 'ticker:interval:1500' ${server.url}/v1/changes`);
    await fetch(`${server.url}/v1/changes`, { method: "POST", body: "ticker:interval:1500\n" });
    await waitUntil(() => output().includes("Next tick in 1500 ms!"));
  });
});

describe("a subscriber in another language (examples/sidecar/subscriber.py, Python's standard library)", () => {
  it("prints the value and each change, and after a sidecar restart the changes it missed", async () => {
    const dir = await dataDir();
    const first = await sidecar(dir);
    const output = run("python3", [PYTHON_SUBSCRIBER, first.url!, "ticker", "interval"]);
    await waitUntil(() => output().includes("ticker.interval = 1000 (revision 0)"));
    await appendFile(join(dir, "cdp.new"), "ticker:name:other\nticker:interval:1500\n");
    await waitUntil(() => output().includes("ticker.interval = 1500 (was 1000, revision 2, from cdp.new:2)"));
    expect(output()).not.toContain("ticker.name"); // it follows one key

    await first.stop();
    await appendFile(join(dir, "cdp.new"), "ticker:interval:1600\n");
    await sidecar(dir, new URL(first.url!).host);
    await waitUntil(() => output().includes("ticker.interval = 1600 (was 1500, revision 3, from cdp.new:3)"));
    expect(output()).toContain("reconnecting from revision 2");
  });
});
