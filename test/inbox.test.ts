// The inbox under the things real inboxes go through: rotation mid-stream, many writers,
// missing events, and outages.
import { spawn } from "node:child_process";
import { appendFile, mkdir, rename, rm, rmdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { appendAndWait, dataDir, journalOf, type Running, readText, runCdp, SCHEMAS, startWatch, tempDir, waitUntil } from "./helpers.js";

describe("the inbox", () => {
  it("reads the rest of a file moved away before switching to its replacement, as tail -F does", async () => {
    const dir = await dataDir();
    const inbox = join(dir, "cdp.new");
    const watch = await startWatch(dir);
    await appendAndWait(dir, "ticker:name:old-0\n", 1);
    const rest = Array.from({ length: 2000 }, (_, i) => `ticker:name:old-${i + 1}\n`).join("");
    await appendFile(inbox, rest);
    await rename(inbox, `${inbox}.1`);
    await writeFile(inbox, "ticker:name:new-0\n");
    await waitUntil(async () => (await journalOf(dir)).length === 2002);
    const journal = await journalOf(dir);
    expect(journal.slice(0, 2001)).toEqual(Array.from({ length: 2001 }, (_, i) => `ticker:name:old-${i}`));
    expect(journal[2001]).toBe("ticker:name:new-0");
    watch.child.kill("SIGTERM");
  });

  it("processes 20 writers appending 1,000 lines each at once, every line exactly once", async () => {
    const dir = await dataDir();
    const inbox = join(dir, "cdp.new");
    const watch = await startWatch(dir);
    const writer = `const fs = require("node:fs"); const fd = fs.openSync(process.argv[1], "a");
      for (let i = 0; i < 1000; i++) fs.writeSync(fd, "ticker:name:w" + process.argv[2] + "-" + i + "\\n");`;
    await Promise.all(
      Array.from({ length: 20 }, (_, k) => {
        const child = spawn(process.execPath, ["-e", writer, inbox, String(k)], { stdio: "ignore" });
        return new Promise((resolve) => child.on("exit", resolve));
      }),
    );
    await waitUntil(async () => (await journalOf(dir)).length === 20_000);
    const journal = await journalOf(dir);
    expect(new Set(journal).size).toBe(20_000);
    for (let k = 0; k < 20; k++) {
      const own = journal.filter((line) => line.startsWith(`ticker:name:w${k}-`));
      expect(own).toEqual(Array.from({ length: 1000 }, (_, i) => `ticker:name:w${k}-${i}`));
    }
    expect(await readText(join(dir, "cdp.rej"))).toBe("");
    watch.child.kill("SIGTERM");
  });

  it("catches up through the periodic check when no file-system event ever comes", async () => {
    const dir = await dataDir();
    const watch = await startWatch(dir, ["--poll-only", "--poll-interval", "200"]);
    await appendAndWait(dir, "ticker:interval:1500\n", 1);
    await appendAndWait(dir, "ticker:interval:2500\n", 2);
    expect(await journalOf(dir)).toEqual(["ticker:interval:1500", "ticker:interval:2500"]);
    watch.child.kill("SIGTERM");
  });

  it("retries an unavailable inbox and goes on when it is back", async () => {
    const dir = await dataDir();
    const inbox = join(dir, "cdp.new");
    const watch = await startWatch(dir, ["--poll-interval", "100"]);
    await mkdir(inbox); // a directory where the file should be: it cannot be read
    await waitUntil(() => watch.output().includes("the inbox is unavailable"));
    await rmdir(inbox);
    await appendAndWait(dir, "ticker:interval:1500\n", 1);
    expect(watch.output()).toContain("the inbox is available again");
    watch.child.kill("SIGTERM");
  });

  it("exits 3 when the inbox stays unavailable past --max-outage", async () => {
    const dir = await dataDir();
    const watch = await startWatch(dir, ["--max-outage", "1"]);
    await mkdir(join(dir, "cdp.new"));
    const started = Date.now();
    expect(await watch.exited).toBe(3);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1000);
    expect(watch.output()).toContain(
      `cdp: the inbox ${join(dir, "cdp.new")} has been unavailable for more than 1 s (ENOTREG: ${join(dir, "cdp.new")} is a directory`,
    );
  });

  it("exits 3 after more than --max-outages outages within the window", async () => {
    const dir = await dataDir();
    const inbox = join(dir, "cdp.new");
    const watch = await startWatch(dir, ["--poll-interval", "50", "--max-outages", "2", "--outage-window", "600"]);
    for (let outage = 1; outage <= 3; outage++) {
      await mkdir(inbox);
      await waitUntil(() => watch.output().includes(`"outages":${outage}`) || watch.child.exitCode !== null);
      if (outage === 3) break;
      await rmdir(inbox);
      await waitUntil(() => watch.output().split("the inbox is available again").length > outage);
    }
    expect(await watch.exited).toBe(3);
    expect(watch.output()).toContain("was unavailable 3 times within 600 s");
  });

  it("exits 3 when the data directory itself disappears for too long", async () => {
    const dir = join(await tempDir(), "data");
    const watch = await startWatch(dir, ["--max-outage", "1"]);
    await rm(dir, { recursive: true, maxRetries: 10, retryDelay: 20 }); // cdp may be writing in it (cdp.watcher) at that moment
    expect(await watch.exited).toBe(3);
    expect(watch.output()).toContain("ENOENT");
  });
});

describe("when file-system watching fails", () => {
  // inotify instances are per user: with the limit at what is in use, cdp's watch cannot start
  const LIMIT = "/proc/sys/fs/inotify/max_user_instances";
  it("reports the error and keeps lines flowing through the periodic check", async () => {
    const dir = await dataDir();
    const original = (await readText(LIMIT)).trim();
    expect(process.getuid?.()).toBe(0); // the suite runs as root here and in CI
    let watch: Running | undefined;
    try {
      await writeFile(LIMIT, "0");
      watch = runCdp(["watch", "--dir", dir, "--schemas", SCHEMAS, "--poll-interval", "200"]);
      await waitUntil(() => watch!.output().includes("cdp is watching") || watch!.child.exitCode !== null);
    } finally {
      await writeFile(LIMIT, original);
    }
    expect(watch.output()).toContain("watching the inbox failed");
    expect(watch.output()).not.toContain("Unhandled");
    await appendAndWait(dir, "ticker:interval:1500\n", 1);
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
  });
});
