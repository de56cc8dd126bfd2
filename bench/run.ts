// `npm run bench`: how close cdp comes to what the machine allows. Every figure is taken in the
// same run as its baseline, and the medians of several rounds are reported, because the machine
// is shared and noisy. Prints a markdown table and writes bench/results.json.
import { fork } from "node:child_process";
import { closeSync, fdatasyncSync, openSync, readSync, watch, writeFileSync, writeSync } from "node:fs";
import { appendFile, mkdtemp, rm, writeFile } from "node:fs/promises";
import { cpus, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { startCdp, type Cdp } from "../src/index.js";

const here = (path: string) => fileURLToPath(new URL(path, import.meta.url));
const SCHEMAS = here("../../bench/schemas"); // from dist/bench
const ROUNDS = 3;
const APPENDS = 2000;
const BURST = 100_000;

const quietLogger = () => pino({ level: "info" }, pino.destination({ dest: "/dev/null", sync: true }));

async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), "cdp-bench-"));
}

function percentile(values: number[], p: number): number {
  const sorted = values.slice().sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

const median = (values: number[]) => percentile(values, 50);

/** Run the appender process against `inbox`; `deliver` must be called once per line it writes. */
function appender(inbox: string): { ack: () => void; done: Promise<void> } {
  const child = fork(here("./appender.js"), [inbox, String(APPENDS)], { stdio: "ignore" });
  return { ack: () => child.send(1), done: new Promise((resolve) => child.on("exit", () => resolve())) };
}

const sinceLine = (value: unknown) => Number(process.hrtime.bigint() - BigInt(value as string)) / 1e6;

/** echo -> subscriber, through cdp with the journal fsync'd. */
async function latencyOfCdp(): Promise<number[]> {
  const dir = await tempDir();
  const cdp = await startCdp({ init: true, dir, schemas: SCHEMAS, logger: quietLogger() });
  const latencies: number[] = [];
  const run = appender(join(dir, "cdp.new"));
  cdp.subscribe("bench", "t", ({ value }) => {
    latencies.push(sinceLine(value));
    run.ack();
  });
  await run.done;
  await cdp.stop();
  await rm(dir, { recursive: true });
  return latencies;
}

/** The least work a durable apply needs: fs.watch, read to the end, append with fdatasync. */
async function latencyOfBaseline(): Promise<number[]> {
  const dir = await tempDir();
  const inbox = join(dir, "cdp.new");
  writeFileSync(inbox, "");
  const input = openSync(inbox, "r");
  const output = openSync(join(dir, "applied"), "a");
  const buffer = Buffer.alloc(1 << 16);
  const latencies: number[] = [];
  let offset = 0;
  let partial = "";
  let run: ReturnType<typeof appender> | undefined;
  const drain = () => {
    for (let read = readSync(input, buffer, 0, buffer.length, offset); read > 0; read = readSync(input, buffer, 0, buffer.length, offset)) {
      offset += read;
      const lines = (partial + buffer.toString("utf8", 0, read)).split("\n");
      partial = lines.pop()!;
      for (const line of lines) {
        writeSync(output, `${line}\n`);
        fdatasyncSync(output);
        latencies.push(sinceLine(line.slice("bench:t:".length)));
        run?.ack();
      }
    }
  };
  const watcher = watch(dir, (_event, name) => name === "cdp.new" && drain());
  run = appender(inbox); // only once the watch is in place
  await run.done;
  watcher.close();
  closeSync(input);
  closeSync(output);
  await rm(dir, { recursive: true });
  return latencies;
}

/** Lines/s for `lines` appended in one write, until the subscriber hears the last one. */
async function burst(lines: string[], last: number): Promise<number> {
  const dir = await tempDir();
  const cdp: Cdp = await startCdp({ init: true, dir, schemas: SCHEMAS, logger: quietLogger() });
  const heard = new Promise<void>((resolve) =>
    cdp.subscribe("bench", "n", ({ value }) => {
      if (value === last) resolve();
    }),
  );
  const started = performance.now();
  await appendFile(join(dir, "cdp.new"), lines.join(""));
  await heard;
  const seconds = (performance.now() - started) / 1000;
  await cdp.stop();
  await rm(dir, { recursive: true });
  return lines.length / seconds;
}

const validBurst = () => Array.from({ length: BURST }, (_, i) => `bench:n:${i + 1}\n`);
const rejectBurst = () => {
  const kinds = [
    (i: number) => `garbage ${i}`,
    (i: number) => `nope:x:${i}`,
    (i: number) => `bench:nope:${i}`,
    () => "bench:n:abc",
    (i: number) => `bench:n:-${i + 1}`,
    (i: number) => `bench:ratio:${i + 2}`,
  ];
  return [...Array.from({ length: BURST - 1 }, (_, i) => `${kinds[i % kinds.length]!(i)}\n`), "bench:n:7\n"];
};

/** Start-up time and memory of a fresh process on a prepared data directory. */
async function startUp(dir: string): Promise<{ ms: number; rss: number; revision: number }> {
  const child = fork(here("./replay.js"), [dir, SCHEMAS], { execArgv: ["--expose-gc"], stdio: "ignore" });
  return new Promise((resolve, reject) => {
    child.on("message", (message) => resolve(message as { ms: number; rss: number; revision: number }));
    child.on("exit", (code) => code !== 0 && reject(new Error(`replay exited ${code}`)));
  });
}

async function journalOf(lines: number, record: (i: number) => string): Promise<string> {
  const dir = await tempDir();
  const chunks: string[] = [];
  for (let from = 0; from < lines; from += 10_000) {
    let chunk = "";
    for (let i = from; i < Math.min(lines, from + 10_000); i++) chunk += record(i);
    chunks.push(chunk);
  }
  await writeFile(join(dir, "cdp"), chunks.join(""));
  return dir;
}

const journalRecord = (i: number) =>
  `# rev=${i + 1} seq=${i + 1} time=2026-11-24T00:00:00.000Z source=cdp.new:${i + 1} inbox=1-1@${(i + 1) * 12}\nbench:n:${i + 1}\n`;

async function main(): Promise<void> {
  const rounds: Record<string, number[]> = {};
  const record = (name: string, value: number) => (rounds[name] ??= []).push(value);
  for (let round = 0; round < ROUNDS; round++) {
    const ours = await latencyOfCdp();
    const base = await latencyOfBaseline();
    for (const p of [50, 95, 99]) {
      record(`cdp p${p}`, percentile(ours, p));
      record(`baseline p${p}`, percentile(base, p));
    }
    record("burst", await burst(validBurst(), BURST));
    record("reject burst", await burst(rejectBurst(), 7));
    process.stderr.write(`round ${round + 1} of ${ROUNDS} done\n`);
  }
  for (let round = 0; round < 2; round++) {
    const million = await journalOf(500_000, journalRecord); // 1,000,000 lines: comment + change each
    const replay = await startUp(million);
    record("replay ms", replay.ms);
    record("replay rss", replay.rss / 2 ** 20);
    await rm(million, { recursive: true });
    const wide = await journalOf(100_000, (i) => `wide:k${i}:${i}\n`);
    const keys = await startUp(wide);
    record("100k keys rss", keys.rss / 2 ** 20);
    await rm(wide, { recursive: true });
  }

  const m = (name: string) => median(rounds[name]!);
  const figures = [
    [
      "echo→subscriber p50",
      `${m("cdp p50").toFixed(2)} ms`,
      `${m("baseline p50").toFixed(2)} ms`,
      `${(m("cdp p50") / m("baseline p50")).toFixed(2)}× baseline`,
      "≤ 1.25× baseline",
      m("cdp p50") <= 1.25 * m("baseline p50"),
    ],
    ["echo→subscriber p95", `${m("cdp p95").toFixed(2)} ms`, `${m("baseline p95").toFixed(2)} ms`, "", "", true],
    ["echo→subscriber p99", `${m("cdp p99").toFixed(2)} ms`, `${m("baseline p99").toFixed(2)} ms`, "", "≤ 20 ms", m("cdp p99") <= 20],
    ["burst (100,000 valid lines)", `${Math.round(m("burst")).toLocaleString("en")} lines/s`, "", "", "≥ 250,000 lines/s", m("burst") >= 250_000],
    [
      "reject burst (100,000 invalid)",
      `${Math.round(m("reject burst")).toLocaleString("en")} lines/s`,
      "",
      "",
      "≥ 100,000 lines/s",
      m("reject burst") >= 100_000,
    ],
    ["start-up replay (1,000,000 lines)", `${Math.round(m("replay ms"))} ms`, "", "", "≤ 1 s", m("replay ms") <= 1000],
    ["RSS after that replay", `${Math.round(m("replay rss"))} MB`, "", "", "≤ 100 MB", m("replay rss") <= 100],
    ["RSS with 100,000 keys", `${Math.round(m("100k keys rss"))} MB`, "", "", "≤ 150 MB", m("100k keys rss") <= 150],
  ] as const;
  console.log("| figure | cdp | baseline | ratio | goal | met |\n| --- | --- | --- | --- | --- | --- |");
  for (const [name, ours, base, ratio, goal, met] of figures)
    console.log(`| ${name} | ${ours} | ${base} | ${ratio} | ${goal} | ${goal ? (met ? "yes" : "**no**") : ""} |`);
  const machine = { cpu: cpus()[0]?.model, cores: cpus().length, memoryGiB: Math.round(totalmem() / 2 ** 30), node: process.version };
  console.log(`\n${machine.cores} × ${machine.cpu}, ${machine.memoryGiB} GiB, Node ${machine.node}; medians of ${ROUNDS} rounds (replay: 2).`);
  writeFileSync(here("../../bench/results.json"), `${JSON.stringify({ date: new Date().toISOString(), machine, rounds, figures }, null, 2)}\n`);
}

await main();
