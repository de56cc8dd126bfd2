// Crashes and stops for real: kill -9 and SIGTERM of `cdp watch` in the middle of a burst.
import { appendFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { cdp, readText, recordLines, SCHEMAS, startWatch, waitUntil, dataDir } from "./helpers.js";

/** A burst of valid and invalid lines (every value distinct), and what cdp must make of it. */
function burst(count: number, tag = "v") {
  const lines = Array.from({ length: count }, (_, i) =>
    i % 7 === 3 ? `ticker:interval:${i % 200}` : i % 11 === 5 ? `garbage ${tag}${i}` : `ticker:name:${tag}${i}`,
  );
  const accepted = lines.filter((line) => line.startsWith("ticker:name:"));
  const rejected = lines.filter((line) => !line.startsWith("ticker:name:"));
  return { text: lines.map((line) => `${line}\n`).join(""), accepted, rejected, count };
}

/** The highest seq committed in the journal (cdp's own metadata comments). */
async function committedSeq(dir: string): Promise<number> {
  const seqs = [...(await readText(join(dir, "cdp"))).matchAll(/^# (?:rev=\d+ )?seq=(\d+) /gm)].map((match) => Number(match[1]));
  return Math.max(0, ...seqs);
}

async function size(path: string): Promise<number> {
  return stat(path).then(
    (info) => info.size,
    () => 0,
  );
}

describe("crash and restart", () => {
  it("applies and rejects every line exactly once, in order, across repeated kill -9 during a 50,000-line burst", async () => {
    const dir = await dataDir();
    const { text, accepted, rejected, count } = burst(50_000);
    await writeFile(join(dir, "cdp.new"), text);
    let kills = 0;
    for (let round = 0; round < 6 && (await committedSeq(dir)) < count; round++) {
      const watch = await startWatch(dir);
      const before = await size(join(dir, "cdp"));
      // kill at a random moment once this run has made some progress
      await waitUntil(async () => (await size(join(dir, "cdp"))) > before || (await committedSeq(dir)) === count);
      await new Promise((resolve) => setTimeout(resolve, Math.random() * 30));
      watch.child.kill("SIGKILL");
      await watch.exited;
      kills++;
    }
    const watch = await startWatch(dir);
    await waitUntil(async () => (await committedSeq(dir)) === count, 60_000);
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);

    expect(kills).toBeGreaterThan(1);
    expect(await recordLines(join(dir, "cdp"))).toEqual(accepted);
    expect(await recordLines(join(dir, "cdp.rej"))).toEqual(rejected);
    const revisions = [...(await readText(join(dir, "cdp"))).matchAll(/^# rev=(\d+) /gm)].map((match) => Number(match[1]));
    expect(revisions).toEqual(accepted.map((_, i) => i + 1));
    const got = await cdp(["get", "--dir", dir, "--schemas", SCHEMAS, "ticker.name"]);
    expect(JSON.parse(got.output)).toBe(accepted.at(-1)!.slice("ticker:name:".length));
  }, 120_000);

  it("finishes and flushes the batch in hand on SIGTERM, and continues there after a restart", async () => {
    const dir = await dataDir();
    const { text, accepted, rejected, count } = burst(50_000, "t");
    let watch = await startWatch(dir);
    await appendFile(join(dir, "cdp.new"), text);
    await waitUntil(async () => (await committedSeq(dir)) > 0);
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
    const stoppedAt = await committedSeq(dir);
    // what was committed is whole: every processed line is in the journal or cdp.rej
    const journaled = (await recordLines(join(dir, "cdp"))).length;
    const refused = (await recordLines(join(dir, "cdp.rej"))).length;
    expect(journaled + refused).toBe(stoppedAt);

    watch = await startWatch(dir);
    await waitUntil(async () => (await committedSeq(dir)) === count, 60_000);
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
    expect(await recordLines(join(dir, "cdp"))).toEqual(accepted);
    expect(await recordLines(join(dir, "cdp.rej"))).toEqual(rejected);
  }, 120_000);
});
