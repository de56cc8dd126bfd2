// The least a fleet host can do, for the fleet bench's floor (bench/fleet.ts): commit its records
// to the fleet's one log, 1,000 per head-checked transaction packed as cdp packs them, and read
// every commit of the log back (unpacked); a refused commit waits until the log's head has moved
// past it, then goes again. No inbox, no judging, no journal, no table: what is left of a host's
// work is the protocol's. Forked with IPC: says "ready" once watching, starts on "go", says
// its CPU time (ms) once it has read `total` records.
// argv: <client: an index into bareClients> <endpoint> <prefix> <host> <records to commit> <total>
import { packCommit, unpackCommit } from "../src/fleet/log.js";
import { bareClients, burstRecords } from "./bare.js";

const [kind, endpoint, prefix, host, mine, total] = process.argv.slice(2) as [string, string, string, string, string, string];
const PACKED = 1000;
const client = bareClients[Number(kind)]!(endpoint);
let seen = 0; // the last revision read from the log
let moved: (() => void) | undefined;
const watch = await client.watch(
  `${prefix}/log/`,
  (value) => {
    seen = Math.max(seen, unpackCommit(value).at(-1)!.revision);
    moved?.();
  },
  true,
);
const until = (done: () => boolean) =>
  new Promise<void>((resolve) => {
    moved = () => done() && resolve();
    moved();
  });
// warm the code first, as a running host's is
for (let i = 0; i < 20; i++) unpackCommit(packCommit(burstRecords(host, i * PACKED, PACKED, new Date().toISOString()), true));
process.send!("ready");
await new Promise((resolve) => process.once("message", resolve));
const [time, cpu] = [new Date().toISOString(), process.cpuUsage()];
for (let committed = 0; committed < Number(mine); ) {
  const head = seen;
  const value = packCommit(burstRecords(host, head, PACKED, time), true);
  if (await client.commit(`${prefix}/head`, head, `${prefix}/log/${String(head + 1).padStart(12, "0")}`, value, head + PACKED)) committed += PACKED;
  await until(() => seen > head);
}
await until(() => seen >= Number(total));
await watch.cancel();
client.close();
const { user, system } = process.cpuUsage(cpu);
process.send!({ cpuMs: (user + system) / 1000 }, () => process.exit(0));
