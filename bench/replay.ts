// A fresh process that starts cdp on a prepared directory and reports how long start-up took and
// the memory it then holds.
import { pino } from "pino";
import { startCdp } from "../src/index.js";

const [dir, schemas] = process.argv.slice(2);
const started = performance.now();
const cdp = await startCdp({ init: true, dir: dir!, schemas: schemas!, logger: pino({ level: "warn" }, pino.destination("/dev/null")), watchEvents: false });
const ms = performance.now() - started;
globalThis.gc?.();
const rss = process.memoryUsage().rss;
await cdp.stop();
process.send!({ ms, rss, revision: cdp.revision });
