// Compaction: the journal stops growing, replay gives the same table, and a crash at any point
// leaves the old journal or the new one.
import { appendFile, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { cdp, FLEET_TIMEOUT, getConfig, readText, recordLines, runCdp, SCHEMAS, startWatch, waitUntil, dataDir } from "./helpers.js";

async function snapshot(dir: string): Promise<{ config: unknown; revision: number }> {
  const config = JSON.parse((await cdp(["get", "--dir", dir, "--schemas", SCHEMAS])).output) as unknown;
  const history = JSON.parse((await cdp(["history", "--dir", dir, "--schemas", SCHEMAS, "--json", "--limit", "1"])).output) as { revision: number }[];
  return { config, revision: history[0]?.revision ?? 0 };
}

async function journalWithChanges(count: number): Promise<string> {
  const dir = await dataDir();
  const lines = Array.from({ length: count }, (_, i) =>
    i % 3 === 0 ? `db:pool.max:${20 + i}` : i % 3 === 1 ? `ticker:name:n${i}` : `ticker:interval:${1000 + i}`,
  );
  const watch = await startWatch(dir);
  await appendFile(join(dir, "cdp.new"), `${lines.join("\n")}\nbroken\n`);
  await waitUntil(async () => (await recordLines(join(dir, "cdp.rej"))).length === 1);
  watch.child.kill("SIGTERM");
  await watch.exited;
  return dir;
}

describe("cdp compact", () => {
  it("keeps the revision of a fleet host's journal that ends with rollout steps it applied nothing at (markers)", async () => {
    const dir = await dataDir();
    const time = "2026-11-27T00:00:00.000Z";
    await writeFile(
      join(dir, "cdp"),
      `# rev=1 seq=0 time=${time} source=b:cdp.new:1\nticker:interval:1500\n` +
        `# rev=2 seq=0 time=${time} source=b:cdp.new:2 marker=rollout:r-1:staged:ticker reason: rollout r-1 staged on c, baking until ${time}; not applied on a\n` +
        `# rev=3 seq=0 time=${time} source=c:rollout:r-1 marker=rollout:r-1:aborted:ticker reason: rollout r-1 aborted (never applied here)\n`,
    );
    const status = async () => JSON.parse((await cdp(["status", "--dir", dir, "--schemas", SCHEMAS, "--json"])).output) as { revision: number };
    expect((await status()).revision).toBe(3);
    expect((await cdp(["history", "--dir", dir, "--schemas", SCHEMAS])).output).toContain("rollout r-1 aborted, nothing changed here");
    for (const keep of ["1", "0"]) {
      expect((await cdp(["compact", "--dir", dir, "--schemas", SCHEMAS, "--keep", keep])).code).toBe(0);
      expect((await status()).revision).toBe(3);
      expect(await getConfig(dir, "ticker.interval")).toBe(1500);
    }
  });

  it("compacts a hand-written journal, keeping its last lines as changes", async () => {
    const dir = await dataDir();
    await writeFile(join(dir, "cdp"), "ticker:name:boot\nticker:interval:1500\nticker:interval:1600\n");
    const before = await snapshot(dir);
    const { code, output } = await cdp(["compact", "--dir", dir, "--schemas", SCHEMAS, "--keep", "2"]);
    expect({ code, output }).toMatchObject({ code: 0, output: expect.stringMatching(/revision 3/) });
    expect(await snapshot(dir)).toEqual(before);
    const history = JSON.parse((await cdp(["history", "--dir", dir, "--schemas", SCHEMAS, "--json"])).output) as { revision: number; source: string }[];
    expect(history.map(({ revision, source }) => ({ revision, source }))).toEqual([
      { revision: 3, source: "cdp:3" },
      { revision: 2, source: "cdp:2" },
    ]);
  });

  it("rewrites the journal as its state plus the last N changes; replay gives the same table and revision", async () => {
    const dir = await journalWithChanges(300);
    const before = await snapshot(dir);
    const size = (await readFile(join(dir, "cdp"))).length;
    const { code, output } = await cdp(["compact", "--dir", dir, "--schemas", SCHEMAS, "--keep", "5"]);
    expect(code).toBe(0);
    expect(output).toMatch(/compacted \S+: \d+ → \d+ bytes, revision 300/);
    expect((await readFile(join(dir, "cdp"))).length).toBeLessThan(size / 10);
    expect(await snapshot(dir)).toEqual(before);
    const history = JSON.parse((await cdp(["history", "--dir", dir, "--schemas", SCHEMAS, "--json"])).output) as { revision: number }[];
    expect(history.map((entry) => entry.revision)).toEqual([300, 299, 298, 297, 296]);
    expect((await cdp(["rollback", "--dir", dir, "--schemas", SCHEMAS, "--to", "200", "--dry-run"])).output).toContain(
      "the history before revision 295 was compacted away",
    );

    // the watcher resumes exactly where it was: nothing is read twice
    const watch = await startWatch(dir);
    await appendFile(join(dir, "cdp.new"), "ticker:interval:4242\n");
    await waitUntil(async () => (await snapshot(dir)).revision === 301);
    expect(await readText(join(dir, "cdp.rej"))).toMatch(/^(# seq=\d+ [^\n]*\nbroken\n)$/);
    watch.child.kill("SIGTERM");
  });

  it(
    "leaves the old journal or the new one, never a mix, when killed at any moment",
    async () => {
      const dir = await journalWithChanges(3000);
      const before = await snapshot(dir);
      for (let round = 0; round < 8; round++) {
        const compaction = runCdp(["compact", "--dir", dir, "--schemas", SCHEMAS, "--keep", String(round)]);
        await new Promise((resolve) => setTimeout(resolve, 100 + Math.random() * 150));
        compaction.child.kill("SIGKILL");
        await compaction.exited;
        expect(await snapshot(dir)).toEqual(before);
      }
      expect((await cdp(["compact", "--dir", dir, "--schemas", SCHEMAS])).code).toBe(0);
      expect(await snapshot(dir)).toEqual(before);
    },
    FLEET_TIMEOUT,
  ); // kills and restarts cdp over and over: ~28 s on a loaded machine

  it("refuses while a watcher owns the directory", async () => {
    const dir = await dataDir();
    const watch = await startWatch(dir);
    const { code, output } = await cdp(["compact", "--dir", dir, "--schemas", SCHEMAS]);
    expect(code).toBe(2);
    expect(output).toContain(`is in use by another cdp (pid ${watch.child.pid})`);
    const second = await cdp(["watch", "--dir", dir, "--schemas", SCHEMAS]);
    expect(second.code).toBe(2);
    expect(second.output).toContain("stop it before you start another watcher");
    watch.child.kill("SIGTERM");
  });

  it("happens automatically in the watcher past --compact-after", async () => {
    const dir = await dataDir();
    const watch = await startWatch(dir, ["--compact-after", "50", "--keep-history", "10"]);
    for (let i = 0; i < 4; i++) {
      await appendFile(join(dir, "cdp.new"), Array.from({ length: 40 }, (_, j) => `ticker:interval:${1000 + i * 40 + j}\n`).join(""));
      await waitUntil(() => watch.output().includes(`"revision":${(i + 1) * 40}`));
    }
    // the compaction runs beside the pipeline: it may end after the last batch is applied
    await waitUntil(() => watch.output().includes("compacted the journal"));
    const journal = await readText(join(dir, "cdp"));
    expect(journal).toMatch(/^# base rev=\d+ /);
    expect((await recordLines(join(dir, "cdp"))).length).toBeLessThan(100);
    watch.child.kill("SIGTERM");
    await watch.exited;
    expect(await snapshot(dir)).toEqual({ config: expect.objectContaining({ ticker: expect.objectContaining({ interval: 1159 }) }), revision: 160 });
  });

  it(
    "runs beside the pipeline in the watcher: a line appended while it compacts is applied before it ends",
    async () => {
      const dir = await dataDir();
      const records = 300_000; // long enough to compact that a line can come and go meanwhile
      let text = "";
      for (let i = 1; i <= records; i++)
        text += `# rev=${i} seq=${i} time=2026-12-05T00:00:00.000Z source=cdp.new:${i}\nticker:interval:${1000 + (i % 1000)}\n`;
      await writeFile(join(dir, "cdp"), text);
      const watch = await startWatch(dir, ["--compact-after", String(records + 1), "--keep-history", "5"]);
      await appendFile(join(dir, "cdp.new"), "ticker:interval:1234\n"); // the change that makes compaction due
      await waitUntil(() => watch.output().includes(`"revision":${records + 1}`));
      await appendFile(join(dir, "cdp.new"), "ticker:name:during\n");
      await waitUntil(() => watch.output().includes("compacted the journal"), 90_000);
      const output = watch.output();
      expect(output.indexOf(`"revision":${records + 2}`)).toBeGreaterThan(0);
      expect(output.indexOf(`"revision":${records + 2}`)).toBeLessThan(output.indexOf("compacted the journal"));
      // what was appended meanwhile is in the compacted journal
      const journal = await readText(join(dir, "cdp"));
      expect(journal).toMatch(/^# base rev=\d+ /);
      expect(journal).toContain("ticker:name:during");
      watch.child.kill("SIGTERM");
      expect(await watch.exited).toBe(0);
      expect(await snapshot(dir)).toEqual({
        config: expect.objectContaining({ ticker: expect.objectContaining({ interval: 1234, name: "during" }) }),
        revision: records + 2,
      });
    },
    FLEET_TIMEOUT,
  );

  it("goes on when an automatic compaction fails, and compacts later", async () => {
    const dir = await dataDir();
    await mkdir(join(dir, "cdp.compacting")); // the temporary file cannot be written
    const watch = await startWatch(dir, ["--compact-after", "10", "--keep-history", "2"]);
    await appendFile(join(dir, "cdp.new"), Array.from({ length: 15 }, (_, i) => `ticker:interval:${1000 + i}\n`).join(""));
    await waitUntil(() => watch.output().includes("compaction failed; the journal is left as it was"));
    await waitUntil(async () => (await snapshot(dir)).revision === 15);
    await rm(join(dir, "cdp.compacting"), { recursive: true });
    await appendFile(join(dir, "cdp.new"), Array.from({ length: 15 }, (_, i) => `ticker:interval:${2000 + i}\n`).join(""));
    await waitUntil(() => watch.output().includes("compacted the journal"));
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
    expect(await snapshot(dir)).toEqual({ config: expect.objectContaining({ ticker: expect.objectContaining({ interval: 2014 }) }), revision: 30 });
  });

  it("ignores a temporary file left by a crash", async () => {
    const dir = await journalWithChanges(30);
    const before = await snapshot(dir);
    await writeFile(join(dir, "cdp.compacting"), "# base rev=1 seq=1 time=x source=compaction\nticker:interval:garbage");
    expect(await snapshot(dir)).toEqual(before);
    expect((await cdp(["compact", "--dir", dir, "--schemas", SCHEMAS])).code).toBe(0);
    expect(await snapshot(dir)).toEqual(before);
  });
});
