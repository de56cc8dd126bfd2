// Disk faults injected for real: a file-size limit set on the running process (prlimit) and a
// full file system (a small tmpfs; the suite runs as root here and in CI).
import { execFile } from "node:child_process";
import { appendFile, mkdir, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterEach, describe, expect, it } from "vitest";
import { initDataDir } from "../src/store/datadir.js";
import { getConfig, journalOf, recordLines, SCHEMAS, startWatch, tempDir, waitUntil, dataDir, appendAndWait } from "./helpers.js";

const run = promisify(execFile);
const mounts: string[] = [];
afterEach(async () => {
  for (const mount of mounts.splice(0)) await run("umount", ["-l", mount]).catch(() => undefined);
});

describe("when the journal cannot be written", () => {
  it("holds the batch under a file-size limit and applies it, once, when the limit is lifted", async () => {
    const dir = await dataDir();
    const watch = await startWatch(dir);
    await appendAndWait(dir, "ticker:interval:1500\n", 1);
    const journalSize = (await stat(join(dir, "cdp"))).size;

    // room for part of one record: the write lands in part and must be cut back
    await run("prlimit", ["--pid", String(watch.child.pid), `--fsize=${journalSize + 60}:unlimited`]);
    const lines = Array.from({ length: 50 }, (_, i) => `ticker:name:n${i}`);
    await appendFile(join(dir, "cdp.new"), lines.map((line) => `${line}\n`).join(""));
    await waitUntil(() => watch.output().includes("cannot write: the batch is held and tried again"));
    expect(watch.output()).toContain("EFBIG");
    expect((await stat(join(dir, "cdp"))).size).toBe(journalSize);
    expect(await getConfig(dir, "ticker.name")).toBe("tick");

    await run("prlimit", ["--pid", String(watch.child.pid), "--fsize=unlimited:unlimited"]);
    await waitUntil(async () => (await journalOf(dir)).length === 51);
    expect(await journalOf(dir)).toEqual(["ticker:interval:1500", ...lines]);
    expect(await getConfig(dir, "ticker.name")).toBe("n49");
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
  });

  it("holds the batch on a full disk and applies it, once, when space is freed", async () => {
    const dir = join(await tempDir(), "data");
    await mkdir(dir);
    await run("mount", ["-t", "tmpfs", "-o", "size=512k", "tmpfs", dir]);
    mounts.push(dir);
    await initDataDir(dir, SCHEMAS);
    const lines = Array.from({ length: 40 }, (_, i) => `ticker:name:${String(i).padStart(4, "0")}${"x".repeat(1000)}`);
    await writeFile(join(dir, "cdp.new"), lines.map((line) => `${line}\n`).join(""));
    await writeFile(join(dir, "filler"), Buffer.alloc(1 << 20)).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== "ENOSPC") throw error;
    });

    const watch = await startWatch(dir);
    await waitUntil(() => watch.output().includes("cannot write: the batch is held and tried again"));
    expect(watch.output()).toContain("ENOSPC");
    expect(await journalOf(dir)).toEqual([]);

    await rm(join(dir, "filler"));
    await waitUntil(async () => (await journalOf(dir)).length === 40);
    expect(await journalOf(dir)).toEqual(lines);
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
  });

  it("holds the batch while the journal cannot be written (immutable, as on a read-only disk) and applies it after", async () => {
    const dir = await dataDir();
    const watch = await startWatch(dir);
    await appendAndWait(dir, "ticker:interval:1500\n", 1);
    // a read-only remount is refused while cdp holds the journal open for writing, so the
    // journal is made immutable (ext4's chattr +i): writes to the open file then fail with EPERM
    await run("chattr", ["+i", join(dir, "cdp")]);
    try {
      await appendFile(join(dir, "cdp.new"), "ticker:interval:2500\n");
      await waitUntil(() => watch.output().includes("EPERM"));
      expect(await getConfig(dir, "ticker.interval")).toBe(1500);
    } finally {
      await run("chattr", ["-i", join(dir, "cdp")]);
    }
    await waitUntil(async () => (await journalOf(dir)).length === 2);
    expect(await journalOf(dir)).toEqual(["ticker:interval:1500", "ticker:interval:2500"]);
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
  });

  it("stops on SIGTERM while a batch is held, and processes it at the next start", async () => {
    const dir = await dataDir();
    const watch = await startWatch(dir);
    await run("prlimit", ["--pid", String(watch.child.pid), "--fsize=10:unlimited"]);
    await appendFile(join(dir, "cdp.new"), "ticker:interval:1500\nbroken\n");
    await waitUntil(() => watch.output().includes("cannot write"));
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
    expect(watch.output()).toContain("stopping with the batch unwritten");
    expect(await journalOf(dir)).toEqual([]);
    expect(await recordLines(join(dir, "cdp.rej"))).toEqual([]);

    const again = await startWatch(dir);
    await waitUntil(async () => (await journalOf(dir)).length === 1 && (await recordLines(join(dir, "cdp.rej"))).length === 1);
    again.child.kill("SIGTERM");
    expect(await again.exited).toBe(0);
  });
});

describe("when fsync fails", () => {
  // ext4 on a loop device whose backing file lives on a tmpfs that is then filled: writes land in
  // the page cache, and fdatasync fails when the loop device cannot write them out. A second
  // fsync would report success (the error is consumed): the fault PostgreSQL called fsyncgate.
  it("stops with a clear error instead of retrying, and a restart recovers from the journal", async () => {
    const root = await tempDir();
    const back = join(root, "back");
    const disk = join(root, "disk");
    await mkdir(back);
    await mkdir(disk);
    await run("mount", ["-t", "tmpfs", "-o", "size=16m", "tmpfs", back]);
    mounts.push(back);
    await run("truncate", ["-s", "64M", join(back, "disk.img")]);
    await run("mkfs.ext4", ["-q", "-O", "^has_journal", "-E", "lazy_itable_init=1", join(back, "disk.img")]);
    const loop = (await run("losetup", ["-f", "--show", join(back, "disk.img")])).stdout.trim();
    try {
      await run("mount", [loop, disk]);
      mounts.unshift(disk);
      const dir = join(disk, "data");
      const watch = await startWatch(dir);
      await appendAndWait(dir, "ticker:interval:1500\n", 1);

      await writeFile(join(back, "filler"), Buffer.alloc(32 << 20)).catch(() => undefined); // fills the backing store
      const lines = Array.from({ length: 2000 }, (_, i) => `ticker:name:${String(i).padStart(500, "n")}`);
      await appendFile(join(dir, "cdp.new"), lines.map((line) => `${line}\n`).join(""));
      expect(await watch.exited).toBe(1);
      expect(watch.output()).toMatch(/fsync of \S+ failed \((ENOSPC|EIO)\): stopping; restart cdp to recover from the journal/);
      // the batch whose fsync failed was never reported accepted
      expect(watch.output().match(/"accepted"/g)!.length).toBeLessThan(2001);

      await rm(join(back, "filler"));
      const again = await startWatch(dir);
      await waitUntil(async () => (await journalOf(dir)).length === 2001);
      expect(await journalOf(dir)).toEqual(["ticker:interval:1500", ...lines]);
      again.child.kill("SIGTERM");
      expect(await again.exited).toBe(0);
    } finally {
      for (const mount of mounts.splice(0)) await run("umount", ["-l", mount]).catch(() => undefined);
      await run("losetup", ["-d", loop]).catch(() => undefined);
    }
  }, 60_000);
});
