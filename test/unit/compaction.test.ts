// Compaction's rewrite, in-process on real files: whatever the changes, the compacted journal
// replays to the same configuration, revision and inbox position, and keeps the last changes'
// history. (test/compact.test.ts runs it in a watcher, with kill -9 at random moments.)
import fc from "fast-check";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import type { KeyInfo, Schemas } from "../../src/schemas/schemas.js";
import { loadSchemas } from "../../src/schemas/schemas.js";
import { compactJournal, swapIn } from "../../src/store/compactor.js";
import { changeRecord, encodeChange, replayJournal } from "../../src/store/journal.js";
import { SCHEMAS, tempDir } from "../helpers.js";

let schemas: Schemas;
beforeAll(async () => {
  schemas = await loadSchemas(SCHEMAS);
});

const change = fc.oneof(
  fc.record({ key: fc.constant("interval"), value: fc.integer({ min: 201, max: 59_999 }) }),
  fc.record({ key: fc.constant("name"), value: fc.string({ maxLength: 12 }) }),
  fc.record({ key: fc.constant("enabled"), value: fc.boolean() }),
  // as the inbox takes them: a whole number beyond 2^53 is refused there (it cannot be kept exactly)
  fc.record({ key: fc.constant("ratio"), value: fc.double({ min: -1e15, max: 1e15, noNaN: true }) }),
);

/** A journal of these changes to the ticker app, as the pipeline writes one. */
function journalOf(changes: { key: string; value: unknown }[]): string {
  return changes
    .map(({ key, value }, i) => {
      const line = encodeChange("ticker", key, value, schemas.get("ticker")!.key([key]) as KeyInfo);
      const commit = { seq: i + 1, time: `2026-12-06T00:00:${String(i % 60).padStart(2, "0")}.000Z`, source: `cdp.new:${i + 1}` };
      return changeRecord({ ...commit, position: { file: "7-9", offset: 20 * (i + 1), line: i + 1 } }, i + 1, line);
    })
    .join("");
}

describe("compaction's rewrite", () => {
  it("replays to the same state, revision and position, keeping the last changes' history", async () => {
    const dir = await tempDir();
    await fc.assert(
      // judged: as the watcher compacts its own journal, without the whole-config checks
      fc.asyncProperty(fc.array(change, { minLength: 1, maxLength: 40 }), fc.integer({ min: 0, max: 10 }), fc.boolean(), async (changes, keep, judged) => {
        const path = join(dir, "cdp");
        await writeFile(path, journalOf(changes));
        const before = await replayJournal(path, schemas, { history: true });
        const written = await compactJournal(path, schemas, keep, { judged });
        await swapIn(written.temporary, path);
        const after = await replayJournal(path, schemas, { history: true });
        expect(after.apps).toEqual(before.apps);
        expect({ revision: after.revision, seq: after.seq, position: after.position }).toEqual({
          revision: changes.length,
          seq: changes.length,
          position: { file: "7-9", offset: 20 * changes.length, line: changes.length },
        });
        const kept = Math.min(keep, changes.length);
        expect(after.history.map((entry) => entry.revision)).toEqual(before.history.slice(before.history.length - kept).map((entry) => entry.revision));
        expect((await readFile(path, "utf8")).match(/^ticker:/gm)?.length ?? 0).toBeLessThanOrEqual(kept + 5); // the base block: at most one line per key
      }),
      { numRuns: 40 },
    );
  });

  it("keeps hand-written changes as changes after the base block, with where they came from", async () => {
    const path = join(await tempDir(), "cdp");
    await writeFile(path, "ticker:name:first\nticker:interval:1500\n# an operator's note\nticker:interval:1600\n");
    const written = await compactJournal(path, schemas, 2);
    await swapIn(written.temporary, path);
    const after = await replayJournal(path, schemas, { history: true });
    expect(after.revision).toBe(3);
    expect(after.apps.get("ticker")).toMatchObject({ name: "first", interval: 1600 });
    expect(after.history.map(({ revision, source, time, previous }) => ({ revision, source, time, previous }))).toEqual([
      { revision: 2, source: "cdp:2", time: undefined, previous: 1000 },
      { revision: 3, source: "cdp:4", time: undefined, previous: 1500 },
    ]);
  });
  it("leaves nested defaults to start-up when the watcher compacts without the whole-config checks", async () => {
    const path = join(await tempDir(), "cdp");
    // a whole object set without its defaulted keys: start-up's check fills them in
    const lines = ['db:pool:{"max":20}', "db:pool.min:2", "db:host:example.org", 'db:pool:{"max":30}'];
    await writeFile(path, lines.map((line) => `${line}\n`).join(""));
    const before = await replayJournal(path, schemas);
    expect(before.apps.get("db")).toEqual({ host: "example.org", pool: { max: 30, min: 1 } });
    for (const keep of [0, 1, 3]) {
      const written = await compactJournal(path, schemas, keep, { judged: true });
      await swapIn(written.temporary, path);
      expect((await replayJournal(path, schemas)).apps).toEqual(before.apps);
    }
  });

  it("rewrites an app of thousands of keys in steps, to the same state", async () => {
    const [dir, schemaDir] = [await tempDir(), await tempDir()];
    await writeFile(join(schemaDir, "map.schema.json"), JSON.stringify({ type: "object", additionalProperties: { type: "integer" } }));
    const mapSchemas = await loadSchemas(schemaDir);
    const path = join(dir, "cdp");
    // 5,000 keys set, some twice, one undone to its first value by the history kept
    const lines = Array.from({ length: 6000 }, (_, i) => `map:k${i % 5000}:${i}\n`);
    for (const judged of [false, true]) {
      await writeFile(path, lines.join(""));
      const before = await replayJournal(path, mapSchemas);
      const written = await compactJournal(path, mapSchemas, 1500, { judged });
      await swapIn(written.temporary, path);
      const after = await replayJournal(path, mapSchemas, { history: true });
      expect(Object.keys(after.apps.get("map")!)).toHaveLength(5000);
      expect(after.apps).toEqual(before.apps);
      expect(after.history).toHaveLength(1500);
      expect(after.revision).toBe(6000);
    }
  });
});
