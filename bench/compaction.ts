// One point of the compaction curve, in a fresh process. argv: MODE DIR SCHEMAS RECORDS [ETCD]
//   steady:  start cdp on the journal, report its RSS (what a watcher holds)
//   compact: what `cdp compact` does, report its time and peak RSS
//   watch:   a watcher whose compaction comes due; lines appended by another process, each 20 ms
//            after the last was heard, while it compacts: report their append→subscriber latencies
//   fleet:   the same, the watcher a fleet host on the etcd at ETCD (its log's head set to the
//            journal's revision first: the host's lines go through the fleet's log)
import { fork } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { Writable } from "node:stream";
import { pino } from "pino";
import { compactJournal, swapIn } from "../src/store/compactor.js";
import { startCdp } from "../src/index.js";
import { loadSchemas } from "../src/schemas/schemas.js";
import { Etcd } from "../src/fleet/etcd.js";

const [mode, dir, schemas, recordsText, endpoint] = process.argv.slice(2) as [string, string, string, string, string | undefined];
const records = Number(recordsText);
const quiet = () => pino({ level: "warn" }, pino.destination({ dest: "/dev/null", sync: true }));

if (mode === "steady") {
  const cdp = await startCdp({ init: true, dir, schemas, logger: quiet(), watchEvents: false, compactAfter: 0 });
  globalThis.gc?.();
  const rss = process.memoryUsage().rss / 2 ** 20;
  await cdp.stop();
  process.send!({ rss });
} else if (mode === "compact") {
  const started = performance.now();
  const path = join(dir, "cdp");
  const written = await compactJournal(path, await loadSchemas(schemas), 1000);
  await swapIn(written.temporary, path);
  // VmHWM: this program's peak since its exec (ru_maxrss keeps the bench process's, which forked it)
  const peak = Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"))![1]) / 1024;
  process.send!({ ms: performance.now() - started, peak });
} else {
  let compacted!: () => void;
  const done = new Promise<void>((resolve) => (compacted = resolve));
  const log = new Writable({
    write(chunk: Buffer, _encoding, next) {
      if (chunk.toString().includes("compacted the journal")) compacted();
      next();
    },
  });
  const prefix = `/cdp/compaction-${process.pid}`;
  if (mode === "fleet") {
    const etcd = new Etcd({ endpoints: [endpoint!] });
    await etcd.put(`${prefix}/head`, String(records)); // a fleet whose log is where this host's journal is
    etcd.close();
  }
  const cluster = mode === "fleet" ? { cluster: { endpoints: [endpoint!], prefix, host: "bench" } } : {};
  const cdp = await startCdp({ init: true, dir, schemas, logger: pino({ level: "info" }, log), compactAfter: records + 1, keepHistory: 1000, ...cluster });
  let ended = false;
  void done.then(() => (ended = true));
  const latencies: number[] = [];
  // another process appends (a watcher that holds its event loop delays the line, not its append)
  const appender = fork(fileURLToPath(new URL("./appender.js", import.meta.url)), [join(dir, "cdp.new"), "1000000", "bench:t:", "20"], { stdio: "ignore" });
  cdp.subscribe("bench", "t", ({ value }) => {
    latencies.push(Number(process.hrtime.bigint() - BigInt(value as string)) / 1e6);
    if (!ended || latencies.length < 3)
      appender.send(1); // the first line makes compaction due
    else appender.kill();
  });
  const delay = monitorEventLoopDelay({ resolution: 5 });
  delay.enable();
  await new Promise((resolve) => appender.on("exit", resolve));
  await new Promise((resolve) => setTimeout(resolve, 200));
  await cdp.stop();
  latencies.sort((a, b) => a - b);
  delay.disable();
  process.send!({
    lines: latencies.length,
    p50: latencies[Math.floor(latencies.length / 2)],
    p99: latencies[Math.floor(latencies.length * 0.99)],
    max: latencies.at(-1),
    loopMax: delay.max / 1e6,
    latencies: latencies.slice(-5),
  });
}
