// The ticker demo: a worker whose pace is read live from ticker:interval.
// Run it with `npm start`, then append lines to the inbox it names. With CDP_URL set (and
// CDP_TOKEN if the sidecar asks for one), it runs beside a `cdp watch --http` sidecar instead.
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import pretty from "pino-pretty";
import { connectCdp, startCdp } from "../../src/index.js";

const here = fileURLToPath(new URL("../../../examples/ticker/", import.meta.url)); // from dist/examples/ticker
const dir = resolve(process.env.CDP_DIR ?? join(here, "data"));
const remote = process.env.CDP_URL;
if (!remote) mkdirSync(dir, { recursive: true });
const inbox = join(dir, "cdp.new");

const logger = pino({ level: "info" }, pretty({ colorize: process.stdout.isTTY, sync: true, ignore: "pid,hostname", singleLine: true }));
const cdp = await (remote
  ? connectCdp({ url: remote, token: process.env.CDP_TOKEN, logger })
  : startCdp({ init: true, dir, schemas: join(here, "schemas"), logger })
).catch((error: Error) => {
  console.error(`cdp: ${error.message}`);
  process.exit(2);
});

let timer: NodeJS.Timeout | undefined;
function tick(): void {
  const interval = cdp.get("ticker", "interval") as number;
  console.log(`Next tick in ${interval} ms!`);
  timer = setTimeout(tick, interval);
}
// A new interval takes effect at once: the pending tick is rescheduled with it.
cdp.subscribe("ticker", "interval", () => {
  clearTimeout(timer);
  tick();
});

const push = (line: string) => (remote ? `curl --data-binary '${line}' ${remote}/v1/changes` : `echo '${line}' >> ${inbox}`);
console.log(`cdp ticker demo: the interval comes live from ticker:interval (now ${String(cdp.get("ticker", "interval"))} ms).
Try, in another terminal:
  ${push("ticker:interval:1500")}     (the pace changes at once)
  ${push("ticker:interval:100")}      (rejected: must be > 200${remote ? "" : `; see ${join(dir, "cdp.rej")}`})
  ${push("broken")}                   (rejected: not a change line)
Stop with Ctrl-C.`);
tick();

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    clearTimeout(timer);
    void cdp.stop().then(() => process.exit(0));
  });
}
