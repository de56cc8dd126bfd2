// Secret values sealed at rest (--secrets-key) through the CLI and the sidecar, with real files
// and processes: nothing in the data directory holds a pushed secret in clear, a restart opens
// them with the key, the wrong key or none stops cdp (exit 2), and `cdp rekey` survives kill -9.
import { appendFile, readdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Etcd3 } from "etcd3";
import { unpackCommit } from "../src/fleet/log.js";
import { afterThisTest, cdp, FLEET_TIMEOUT, journalOf, runCdp, SCHEMAS, tempDir, waitUntil } from "./helpers.js";
import { fleetArgs, startEtcd, startFleetHost } from "./etcd.js";

/** Every file of the data directory that holds `text` (as grep -r would find it). */
async function filesHolding(dir: string, text: string): Promise<string[]> {
  const found: string[] = [];
  for (const name of await readdir(dir)) {
    const content = await readFile(join(dir, name)).catch(() => Buffer.alloc(0));
    if (content.includes(text)) found.push(name);
  }
  return found;
}

async function keyedDir(): Promise<{ dir: string; key: string }> {
  const [dir, key] = [join(await tempDir(), "data"), join(await tempDir(), "secrets.key")];
  const init = await cdp(["init", "--dir", dir, "--schemas", SCHEMAS, "--secrets-key", key]);
  expect(init.code, init.output).toBe(0);
  expect(init.output).toMatch(/wrote a new secrets key to .*secrets\.key \(key [0-9a-f]{12}\)/);
  return { dir, key };
}

async function watching(dir: string, args: string[]) {
  const watch = runCdp(["watch", "--dir", dir, ...args]);
  await waitUntil(() => watch.output().includes("cdp is watching") || watch.child.exitCode !== null);
  expect(watch.child.exitCode, watch.output()).toBeNull();
  return watch;
}

describe("secrets sealed at rest", () => {
  it("writes a new key at init (mode 0600), seals what push, HTTP, rejections and compaction write, and opens it with the key after a restart", async () => {
    const { dir, key } = await keyedDir();
    expect((await stat(key)).mode & 0o777).toBe(0o600);
    expect((await readFile(key, "utf8")).trim()).toMatch(/^[0-9a-f]{64}$/);
    const watch = await watching(dir, ["--secrets-key", key, "--http", "127.0.0.1:0"]);
    const url = /"url":"(http:[^"]+)"/.exec(watch.output())![1]!;

    const pushed = await cdp(["push", "--dir", dir, "--secrets-key", key, "ticker:token:pushed-secret-1", "ticker:interval:1500", "ticker:token:tiny"]);
    expect(pushed.code).toBe(1); // "tiny" is too short
    expect(pushed.output).toContain("ticker:token:[secret]  accepted at revision 1");
    expect(pushed.output).toContain("ticker:token:[secret]  rejected: ticker.token must NOT have fewer than 8 characters (value hidden: secret key)");
    expect(pushed.output).not.toContain("pushed-secret-1");
    const posted = await fetch(`${url}/v1/changes`, { method: "POST", body: "ticker:token:posted-secret-2\n" });
    expect(posted.status).toBe(200);
    // a line a person appends is theirs; what cdp writes of it is sealed
    await appendFile(join(dir, "cdp.new"), "ticker:token:echoed-secret-3\n");
    await waitUntil(async () => (await journalOf(dir)).length === 4);

    for (const secret of ["pushed-secret-1", "tiny", "posted-secret-2"]) expect([secret, await filesHolding(dir, secret)]).toEqual([secret, []]);
    expect(await filesHolding(dir, "echoed-secret-3")).toEqual(["cdp.new"]);
    expect((await journalOf(dir)).filter((line) => line.startsWith("ticker:token:"))).toHaveLength(3);
    for (const line of (await journalOf(dir)).filter((line) => line.startsWith("ticker:token:")))
      expect(line).toMatch(/^ticker:token:!sealed:v1:[0-9a-f]{12}:/);

    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
    // the base block of a compacted journal is sealed too
    expect((await cdp(["compact", "--dir", dir, "--secrets-key", key, "--keep", "0"])).code).toBe(0);
    expect(await filesHolding(dir, "echoed-secret-3")).toEqual(["cdp.new"]);
    const get = await cdp(["get", "--dir", dir, "--secrets-key", key, "--show-secrets", "ticker.token"]);
    expect([get.code, get.output.trim()]).toEqual([0, '"echoed-secret-3"']);

    const again = await watching(dir, ["--secrets-key", key]);
    await appendFile(join(dir, "cdp.new"), "ticker:interval:1600\n");
    await waitUntil(async () => (await journalOf(dir)).some((line) => line === "ticker:interval:1600"));
    again.child.kill("SIGTERM");
    expect(await again.exited).toBe(0);
  });

  it("refuses to start without the key, or with another key, naming the key it needs (exit 2)", async () => {
    const { dir, key } = await keyedDir();
    await appendFile(join(dir, "cdp.new"), "ticker:token:first-secret\n");
    const watch = await watching(dir, ["--secrets-key", key]);
    await waitUntil(async () => (await journalOf(dir)).length === 1);
    watch.child.kill("SIGTERM");
    await watch.exited;
    const id = /"secretsKey": "([0-9a-f]{12})"/.exec(await readFile(join(dir, "cdp.conf"), "utf8"))![1]!;

    const without = await cdp(["watch", "--dir", dir]);
    expect(without.code).toBe(2);
    expect(without.output).toContain(`keeps its secret values sealed with secrets key ${id}: give that key with --secrets-key FILE (or CDP_SECRETS_KEY_FILE)`);
    const other = join(await tempDir(), "other.key");
    await writeFile(other, `${"ab".repeat(32)}\n`, { mode: 0o600 });
    const wrong = await cdp(["get", "--dir", dir, "--secrets-key", other]);
    expect(wrong.code).toBe(2);
    expect(wrong.output).toMatch(
      new RegExp(`the secrets key given is key [0-9a-f]{12}, but the data directory .* keeps its secret values sealed with key ${id}`),
    );
    await writeFile(other, "not a key\n");
    const malformed = await cdp(["get", "--dir", dir, "--secrets-key", other]);
    expect([malformed.code, malformed.output]).toEqual([2, expect.stringContaining(`the secrets key ${other} must hold 64 hex digits`)]);
    // the environment names it as well as the flag
    const viaEnv = runCdp(["get", "--dir", dir, "--show-secrets", "ticker.token"], { env: { CDP_SECRETS_KEY_FILE: key } });
    expect(await viaEnv.exited).toBe(0);
    expect(viaEnv.stdout().trim()).toBe('"first-secret"');

    // a journal sealed with a key the settings do not name (copied from elsewhere) is refused at its line
    await writeFile(join(dir, "cdp.conf"), (await readFile(join(dir, "cdp.conf"), "utf8")).replace(/,\s*"secretsKey": "[0-9a-f]+"/, ""));
    const unnamed = await cdp(["watch", "--dir", dir]);
    expect(unnamed.code).toBe(2);
    expect(unnamed.output).toContain(`cdp:2: ticker.token is sealed with secrets key ${id}, and cdp was given no key`);
  });

  it("rekeys a journal of 50,000 secrets, finishing after kill -9 when run again", async () => {
    const dir = join(await tempDir(), "data");
    expect((await cdp(["init", "--dir", dir, "--schemas", SCHEMAS])).code).toBe(0);
    // a hand-written bootstrap journal, its secrets in clear (written before cdp had a key)
    const lines = Array.from({ length: 50_000 }, (_, i) => `ticker:token:clear-secret-${i}`);
    await writeFile(join(dir, "cdp"), `${lines.join("\n")}\n`);
    const key = join(await tempDir(), "new.key");

    const first = runCdp(["rekey", "--dir", dir, "--new-key", key]);
    await waitUntil(async () => first.child.exitCode !== null || (await readdir(dir)).includes("cdp.rekey"), 30_000, "rekey has begun writing");
    first.child.kill("SIGKILL");
    await first.exited;
    // killed or finished, the journal is whole: under the old form or the new
    expect((await readFile(join(dir, "cdp"), "utf8")).split("\n").length).toBe(50_001);

    const second = await cdp(["rekey", "--dir", dir, "--new-key", key]);
    expect(second.code, second.output).toBe(0);
    expect(await filesHolding(dir, "clear-secret-")).toEqual([]);
    const get = await cdp(["get", "--dir", dir, "--secrets-key", key, "--show-secrets", "ticker.token"]);
    expect([get.code, get.output.trim()]).toEqual([0, '"clear-secret-49999"']);

    // and once more to another key: every value opens with the old one and is sealed with the new
    const newer = join(await tempDir(), "newer.key");
    const third = await cdp(["rekey", "--dir", dir, "--secrets-key", key, "--new-key", newer]);
    expect(third.code, third.output).toBe(0);
    expect(third.output).toContain("sealed 50000 values with key");
    expect((await cdp(["get", "--dir", dir, "--secrets-key", key])).code).toBe(2);
    expect((await cdp(["get", "--dir", dir, "--secrets-key", newer, "ticker"])).code).toBe(0);
  });
});

describe("secrets sealed in a fleet", () => {
  it("keeps no secret in clear in etcd, and a host without the fleet's key is told so at join (exit 2)", { timeout: FLEET_TIMEOUT }, async () => {
    const etcd = await startEtcd();
    const key = join(await tempDir(), "fleet.key");
    const a = await startFleetHost(etcd, "a", { dir: await keyedAt(key), extra: ["--secrets-key", key] });
    await cdp(["push", "--dir", a.dir, "--secrets-key", key, "ticker:token:fleet-secret-1"]);
    await waitUntil(async () => (await journalOf(a.dir)).length === 1);
    const b = await startFleetHost(etcd, "b", { dir: await keyedAt(key), extra: ["--secrets-key", key] });
    await waitUntil(async () => (await journalOf(b.dir)).length === 1);
    const get = await cdp(["get", "--dir", b.dir, "--secrets-key", key, "--show-secrets", "ticker.token"]);
    expect(get.output.trim()).toBe('"fleet-secret-1"');

    // a burst goes in one commit, deflated: what it holds is looked at once inflated
    const burst = Array.from({ length: 150 }, (_, i) => `ticker:token:fleet-secret-${i + 2}\nticker:interval:${1001 + i}\n`).join("");
    const pushed = await cdp(["push", "--dir", a.dir, "--secrets-key", key, "-"], burst);
    expect(pushed.code, pushed.output).toBe(0);
    await waitUntil(async () => (await journalOf(b.dir)).length === 301);

    const client = new Etcd3({ hosts: etcd.endpoints });
    afterThisTest(async () => client.close());
    const all = await client.getAll().prefix("/").buffers();
    expect(Object.keys(all).length).toBeGreaterThan(0);
    expect(Object.entries(all).filter(([, value]) => value.includes("fleet-secret-"))).toEqual([]);
    const commits = Object.entries(all).filter(([name]) => name.startsWith("/cdp/test/log/"));
    expect(commits.some(([, value]) => value.includes('"deflated":'))).toBe(true);
    const records = commits.flatMap(([, value]) => unpackCommit(value.toString()));
    expect(records.filter((record) => record.line.startsWith("ticker:token:"))).toHaveLength(151);
    expect(records.filter((record) => JSON.stringify(record).includes("fleet-secret-"))).toEqual([]);
    for (const host of [a, b]) expect(await filesHolding(host.dir, "fleet-secret-")).toEqual([]);

    const c = await cdp(["watch", "--dir", await initialised(), ...fleetArgs(etcd, "/cdp/test", "c")]);
    expect(c.code).toBe(2);
    expect(c.output).toMatch(/the fleet seals its secret values with secrets key [0-9a-f]{12}: give this host that key with --secrets-key FILE/);
  });
});

async function initialised(): Promise<string> {
  const dir = join(await tempDir(), "data");
  expect((await cdp(["init", "--dir", dir, "--schemas", SCHEMAS])).code).toBe(0);
  return dir;
}

/** A data directory initialised with the key in `key` (written by the first). */
async function keyedAt(key: string): Promise<string> {
  const dir = join(await tempDir(), "data");
  const init = await cdp(["init", "--dir", dir, "--schemas", SCHEMAS, "--secrets-key", key]);
  expect(init.code, init.output).toBe(0);
  return dir;
}
