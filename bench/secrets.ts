// What sealing secrets at rest costs (issue 25): a burst of changes to a secret key, and to a
// plain key, with and without --secrets-key, in the same run; and the replay of a journal of
// sealed values against one in clear. Medians of rounds; a plain change must cost the same
// with a key as without one. Run with `npm run bench`.
import { randomBytes } from "node:crypto";
import { appendFile, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { startCdp } from "../src/index.js";

const SCHEMAS = fileURLToPath(new URL("../../bench/schemas", import.meta.url)); // from dist/bench
const CHANGES = 20_000;
const ROUNDS = 3;
const quiet = () => pino({ level: "warn" }, pino.destination({ dest: "/dev/null", sync: true }));
const median = (values: number[]) => values.slice().sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

/** µs per change for a burst of CHANGES lines to `key`, and the ms a replay of the journal they leave takes. */
async function round(key: "secret" | "t", keyFile: string | undefined): Promise<{ perChange: number; replayMs: number }> {
  const dir = await mkdtemp(join(tmpdir(), "cdp-bench-"));
  const options = { init: true, dir, schemas: SCHEMAS, logger: quiet(), compactAfter: 0, ...(keyFile ? { secretsKeyFile: keyFile } : {}) };
  const cdp = await startCdp(options);
  const lines = Array.from({ length: CHANGES }, (_, i) => `bench:${key}:value-${String(i).padStart(8, "0")}\n`).join("");
  const started = performance.now();
  await appendFile(join(dir, "cdp.new"), lines);
  while (cdp.revision < CHANGES) await new Promise((resolve) => setTimeout(resolve, 2));
  const perChange = ((performance.now() - started) * 1000) / CHANGES;
  await cdp.stop();
  const replayStarted = performance.now();
  const again = await startCdp({ ...options, init: false });
  const replayMs = performance.now() - replayStarted;
  await again.stop();
  await rm(dir, { recursive: true });
  return { perChange, replayMs };
}

const keyDir = await mkdtemp(join(tmpdir(), "cdp-bench-key-"));
const keyFile = join(keyDir, "secrets.key");
await writeFile(keyFile, `${randomBytes(32).toString("hex")}\n`, { mode: 0o600 });
const cases = [
  { name: "secret key, sealed (--secrets-key)", key: "secret" as const, keyFile },
  { name: "secret key, in clear (no key)", key: "secret" as const, keyFile: undefined },
  { name: "plain key, with --secrets-key", key: "t" as const, keyFile },
  { name: "plain key, no key", key: "t" as const, keyFile: undefined },
];
const results: Record<string, { perChange: number[]; replayMs: number[] }> = {};
for (let r = 0; r < ROUNDS; r++) {
  for (const { name, key, keyFile: file } of cases) {
    const { perChange, replayMs } = await round(key, file);
    results[name] ??= { perChange: [], replayMs: [] };
    results[name].perChange.push(perChange);
    results[name].replayMs.push(replayMs);
  }
}
await rm(keyDir, { recursive: true });
console.log(`\n| ${CHANGES.toLocaleString("en")} changes in one burst (medians of ${ROUNDS}) | µs per change | start-up replaying them |\n| --- | --- | --- |`);
for (const { name } of cases) {
  const { perChange, replayMs } = results[name]!;
  const spread = (values: number[]) => `${Math.min(...values).toFixed(1)}–${Math.max(...values).toFixed(1)}`;
  console.log(`| ${name} | ${median(perChange).toFixed(1)} (${spread(perChange)}) | ${median(replayMs).toFixed(0)} ms |`);
}
const sealed = median(results[cases[0]!.name]!.perChange) - median(results[cases[1]!.name]!.perChange);
const plain = median(results[cases[2]!.name]!.perChange) / median(results[cases[3]!.name]!.perChange);
console.log(
  `\nsealing costs ${sealed.toFixed(1)} µs per secret change; a plain change with a key costs ${plain.toFixed(2)}× one without (goal: 1, within the noise)`,
);
