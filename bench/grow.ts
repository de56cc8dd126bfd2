// One point of a growth curve, in a fresh process (so its memory is its own): start cdp on a
// prepared directory, time single changes from another process and a burst, then report.
// argv: DIR SCHEMAS APP BURST_FILE
import { fork } from "node:child_process";
import { appendFile, readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { startCdp } from "../src/index.js";

const [dir, schemas, app, burstFile] = process.argv.slice(2) as [string, string, string, string];
const APPENDS = 500;
const quiet = pino({ level: "warn" }, pino.destination({ dest: "/dev/null", sync: true }));

const started = performance.now();
const cdp = await startCdp({ init: true, dir, schemas, logger: quiet });
const startMs = performance.now() - started;

// append → subscriber, one line at a time from another process
const latencies: number[] = [];
const child = fork(fileURLToPath(new URL("./appender.js", import.meta.url)), [join(dir, "cdp.new"), String(APPENDS), `${app}:t:`], { stdio: "ignore" });
const off = cdp.subscribe(app, "t", ({ value }) => {
  latencies.push(Number(process.hrtime.bigint() - BigInt(value as string)) / 1e6);
  child.send(1);
});
await new Promise((resolve) => child.on("exit", resolve));
off();

// a burst of changes in one write, until the subscriber hears the last
const burst = await readFile(burstFile, "utf8");
const lines = burst.split("\n").filter(Boolean);
const heard = new Promise<void>((resolve) => {
  cdp.subscribe(app, ({ source }) => {
    if (source === `cdp.new:${APPENDS + lines.length}`) resolve();
  });
});
const burstStarted = performance.now();
await appendFile(join(dir, "cdp.new"), burst);
await heard;
const burstRate = lines.length / ((performance.now() - burstStarted) / 1000);
globalThis.gc?.();
const rss = process.memoryUsage().rss / 2 ** 20;
await cdp.stop();
latencies.sort((a, b) => a - b);
process.send!({ startMs, p50: latencies[Math.floor(latencies.length / 2)], burstRate, rss });
