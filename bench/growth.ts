// `npm run bench` (growth): how cdp's cost grows with the size of its work, each point in a fresh
// process, medians of rounds with their spread. Prints markdown, writes bench/growth.json and the
// curves as docs/growth.svg.
import { fork } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { ETCD, startEtcdCluster } from "./etcd.js";

const here = (path: string) => fileURLToPath(new URL(path, import.meta.url));
const ROUNDS = 3;
type Point = { startMs: number; p50: number; burstRate: number; rss: number };

/** A data directory whose journal holds `entries` lines, a schema directory, and a burst file. */
async function prepared(app: string, schema: object, entries: string[], burst: string[]): Promise<{ dir: string; schemas: string; burstFile: string }> {
  const root = await mkdtemp(join(tmpdir(), "cdp-growth-"));
  const [dir, schemas] = [join(root, "data"), join(root, "schemas")];
  mkdirSync(dir);
  mkdirSync(schemas);
  await writeFile(join(schemas, `${app}.schema.json`), JSON.stringify(schema));
  await writeFile(join(dir, "cdp"), entries.join(""));
  await writeFile(join(root, "burst"), burst.join(""));
  return { dir, schemas, burstFile: join(root, "burst") };
}

async function measure(app: string, schema: object, entries: string[], burst: string[]): Promise<Point> {
  const { dir, schemas, burstFile } = await prepared(app, schema, entries, burst);
  const child = fork(here("./grow.js"), [dir, schemas, app, burstFile], { execArgv: ["--expose-gc"], stdio: "ignore" });
  const point = await new Promise<Point>((resolve, reject) => {
    child.on("message", (message) => resolve(message as Point));
    child.on("exit", (code) => code !== 0 && reject(new Error(`a growth point exited ${code}`)));
  });
  await rm(join(dir, ".."), { recursive: true });
  return point;
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);
const median = (values: number[]) => values.slice().sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
const spread = (values: number[]) => `${Math.round((100 * (Math.max(...values) - Math.min(...values))) / median(values))}%`;

// keys in one app (additionalProperties): a routing map, per-tenant limits
const KEYS = [100, 1_000, 20_000, 300_000];
const keyed = { type: "object", properties: { t: { type: "string", default: "0" } }, additionalProperties: { type: "integer" } };
const keysPoint = (n: number) =>
  measure(
    "grow",
    keyed,
    range(n).map((i) => `grow:k${i}:${i}\n`),
    range(2000).map((i) => `grow:k${(i * 7919) % n}:${i}\n`),
  );

// properties in one schema, each with its own rules
const PROPERTIES = [10, 100, 1_000, 3_000];
const propertySchema = (n: number) => ({
  type: "object",
  properties: { t: { type: "string", default: "0" }, ...Object.fromEntries(range(n).map((i) => [`p${i}`, { type: "integer", minimum: 0, default: 0 }])) },
  additionalProperties: false,
});
const propertiesPoint = (n: number) =>
  measure(
    "props",
    propertySchema(n),
    [],
    range(5000).map((i) => `props:p${(i * 7919) % n}:${i}\n`),
  );

type Curve = { name: string; sizes: number[]; rounds: Point[][] };

async function curve(name: string, sizes: number[], point: (n: number) => Promise<Point>): Promise<Curve> {
  const rounds: Point[][] = sizes.map(() => []);
  for (let round = 0; round < ROUNDS; round++) {
    for (const [i, size] of sizes.entries()) rounds[i]!.push(await point(size));
    process.stderr.write(`${name}: round ${round + 1} of ${ROUNDS} done\n`);
  }
  return { name, sizes, rounds };
}

const figure = (c: Curve, i: number, field: keyof Point) => median(c.rounds[i]!.map((p) => p[field]));

function table(c: Curve): string {
  const rows = c.sizes.map((size, i) => {
    const each = (field: keyof Point, digits: number) => `${figure(c, i, field).toFixed(digits)} (±${spread(c.rounds[i]!.map((p) => p[field]))})`;
    return `| ${size.toLocaleString("en")} | ${each("p50", 2)} ms | ${each("burstRate", 0)}/s | ${each("startMs", 0)} ms | ${each("rss", 0)} MB |`;
  });
  return [`| ${c.name} | append→subscriber p50 | burst rate | start-up | RSS after |`, "| --- | --- | --- | --- | --- |", ...rows].join("\n");
}

type Panel = { title: string; sizes: number[]; values: number[] };

/** One panel per measure, its sizes evenly spaced (each ~10× the last), from 0: what an operator reads at a glance. */
function svg(panels: Panel[]): string {
  const [w, h, pad] = [360, 200, 40];
  const parts = panels.map(({ title, sizes, values }, index) => {
    const [ox, oy] = [(index % 2) * (w + 20), Math.floor(index / 2) * (h + 30)];
    const top = Math.max(...values) * 1.15;
    const x = (i: number) => ox + pad + (i * (w - 2 * pad)) / (sizes.length - 1);
    const y = (v: number) => oy + h - pad + 10 - (v / top) * (h - 2 * pad);
    const points = values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    const labels = values
      .map(
        (v, i) =>
          `<circle cx="${x(i).toFixed(1)}" cy="${y(v).toFixed(1)}" r="3"/><text x="${x(i).toFixed(1)}" y="${(y(v) - 7).toFixed(1)}" text-anchor="middle">${v >= 10 ? Math.round(v).toLocaleString("en") : v.toFixed(2)}</text><text x="${x(i).toFixed(1)}" y="${oy + h - 12}" text-anchor="middle">${sizes[i]!.toLocaleString("en")}</text>`,
      )
      .join("");
    return `<g><text x="${ox + 8}" y="${oy + 16}" font-weight="bold">${title}</text><line x1="${ox + pad}" y1="${oy + h - pad + 10}" x2="${ox + w - pad}" y2="${oy + h - pad + 10}" stroke="#999"/><polyline fill="none" stroke="#1f6feb" stroke-width="2" points="${points}"/>${labels}</g>`;
  });
  const rows = Math.ceil(panels.length / 2);
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${2 * w + 20}" height="${rows * (h + 30)}" font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="white"/>${parts.join("")}</svg>\n`;
}

// journal lines: compaction by hand (time, peak RSS beside a watcher's) and the watcher's own
const JOURNAL = [100_000, 1_000_000, 3_000_000];
type CompactionPoint = { ms: number; peak: number; steady: number; p99: number; lines: number; fleetP99: number; fleetLines: number };

async function child<T>(args: string[]): Promise<T> {
  const process = fork(here("./compaction.js"), args, { execArgv: ["--expose-gc"], stdio: "ignore" });
  return new Promise<T>((resolve, reject) => {
    process.on("message", (message) => resolve(message as T));
    process.on("exit", (code) => code !== 0 && reject(new Error(`a compaction point exited ${code}`)));
  });
}

/** `records` change records as cdp writes them, the change line of each from `line`. */
const journalOf = (records: number, line: (i: number) => string) =>
  range(records).map((i) => `# rev=${i + 1} seq=${i + 1} time=2026-12-05T00:00:00.000Z source=cdp.new:${i + 1}\n${line(i)}\n`);

async function compactionPoint(lines: number, etcd: string | undefined): Promise<CompactionPoint> {
  const records = lines / 2;
  const schemas = here("../../bench/schemas");
  const journal = journalOf(records, (i) => `bench:n:${i + 1}`);
  const fresh = async () => (await prepared("bench", {}, journal, [])).dir;
  let dir = await fresh();
  const { rss: steady } = await child<{ rss: number }>(["steady", dir, schemas, String(records)]);
  const { ms, peak } = await child<{ ms: number; peak: number }>(["compact", dir, schemas, String(records)]);
  await rm(join(dir, ".."), { recursive: true });
  dir = await fresh();
  const { p99, lines: heard } = await child<{ p99: number; lines: number }>(["watch", dir, schemas, String(records)]);
  await rm(join(dir, ".."), { recursive: true });
  // the same, the watcher a fleet host: its journal's appends come from the fleet's log
  let fleet = { p99: Number.NaN, lines: Number.NaN };
  if (etcd) {
    dir = await fresh();
    fleet = await child<{ p99: number; lines: number }>(["fleet", dir, schemas, String(records), etcd]);
    await rm(join(dir, ".."), { recursive: true });
  }
  return { ms, peak, steady, p99, lines: heard, fleetP99: fleet.p99, fleetLines: fleet.lines };
}

/** A watcher's compaction of an app of `keys` keys (one record each): a line appended meanwhile, p99. */
async function wideCompactionPoint(keys: number): Promise<{ p99: number; lines: number }> {
  const journal = journalOf(keys, (i) => `wide:k${i}:${i}`);
  const { dir } = await prepared("wide", {}, journal, []);
  const point = await child<{ p99: number; lines: number }>(["watch", dir, here("../../bench/schemas"), String(keys)]);
  await rm(join(dir, ".."), { recursive: true });
  return point;
}
const WIDE = 300_000;

const compactions: CompactionPoint[][] = JOURNAL.map(() => []);
const wide: { p99: number; lines: number }[] = [];
const etcdRoot = await mkdtemp(join(tmpdir(), "cdp-growth-etcd-"));
const etcd = existsSync(ETCD) ? await startEtcdCluster(etcdRoot, 1) : undefined;
if (!etcd) process.stderr.write(`compaction in a fleet host not measured: no etcd at ${ETCD} (apt-get install etcd-server, or set ETCD)\n`);
try {
  for (let round = 0; round < 2; round++) {
    for (const [i, lines] of JOURNAL.entries()) compactions[i]!.push(await compactionPoint(lines, etcd?.endpoints[0]));
    wide.push(await wideCompactionPoint(WIDE));
    process.stderr.write(`compaction: round ${round + 1} of 2 done\n`);
  }
} finally {
  await etcd?.stop();
  await rm(etcdRoot, { recursive: true, force: true });
}
const compactionAt = (i: number, field: keyof CompactionPoint) => median(compactions[i]!.map((p) => p[field]));
const compactionTable = [
  "| journal lines | `cdp compact` | its peak RSS | a watcher's RSS | peak ÷ watcher | lines appended during the watcher's compaction: p99 append→subscriber | the same in a fleet host |",
  "| --- | --- | --- | --- | --- | --- | --- |",
  ...JOURNAL.map(
    (lines, i) =>
      `| ${lines.toLocaleString("en")} | ${(compactionAt(i, "ms") / 1000).toFixed(2)} s | ${Math.round(compactionAt(i, "peak"))} MB | ${Math.round(compactionAt(i, "steady"))} MB | ${(compactionAt(i, "peak") / compactionAt(i, "steady")).toFixed(2)}× | ${compactionAt(i, "p99").toFixed(1)} ms (${Math.round(compactionAt(i, "lines"))} lines) | ${compactionAt(i, "fleetP99").toFixed(1)} ms (${Math.round(compactionAt(i, "fleetLines"))} lines) |`,
  ),
].join("\n");
const wideP99 = median(wide.map((point) => point.p99));

const keys = await curve("keys in one app", KEYS, keysPoint);
const properties = await curve("properties in one schema", PROPERTIES, propertiesPoint);
const at = (c: Curve, size: number, field: keyof Point) => figure(c, c.sizes.indexOf(size), field);
const goals = [
  [
    "p50 at 20,000 keys vs 100 keys",
    `${(at(keys, 20_000, "p50") / at(keys, 100, "p50")).toFixed(2)}×`,
    "≤ 1.5×",
    at(keys, 20_000, "p50") <= 1.5 * at(keys, 100, "p50"),
  ],
  [
    "burst at 20,000 keys vs 100 keys",
    `${Math.round((100 * at(keys, 20_000, "burstRate")) / at(keys, 100, "burstRate"))}%`,
    "≥ 50%",
    at(keys, 20_000, "burstRate") >= 0.5 * at(keys, 100, "burstRate"),
  ],
  ["start-up with 300,000 keys in one app", `${Math.round(at(keys, 300_000, "startMs"))} ms`, "< 2 s", at(keys, 300_000, "startMs") < 2000],
  ["RSS after 5,000 changes, 3,000 properties", `${Math.round(at(properties, 3_000, "rss"))} MB`, "< 200 MB", at(properties, 3_000, "rss") < 200],
  [
    "peak RSS of `cdp compact`, 3,000,000 lines, vs a watcher's",
    `${(compactionAt(2, "peak") / compactionAt(2, "steady")).toFixed(2)}×`,
    "≤ 2×",
    compactionAt(2, "peak") <= 2 * compactionAt(2, "steady"),
  ],
  [
    "a line appended during the watcher's compaction (3,000,000 lines), p99",
    `${compactionAt(2, "p99").toFixed(1)} ms`,
    "≤ 100 ms",
    compactionAt(2, "p99") <= 100,
  ],
  ["the same in a fleet host (3,000,000 lines), p99", `${compactionAt(2, "fleetP99").toFixed(1)} ms`, "≤ 100 ms", compactionAt(2, "fleetP99") <= 100],
] as const;
console.log(`${table(keys)}\n\n${table(properties)}\n\n${compactionTable}\n`);
console.log(
  `a line appended during the watcher's compaction of an app of ${WIDE.toLocaleString("en")} keys: p99 ${wideP99.toFixed(1)} ms (${Math.round(median(wide.map((point) => point.lines)))} lines)\n`,
);
console.log("| growth goal | cdp | goal | met |\n| --- | --- | --- | --- |");
for (const [name, value, goal, met] of goals) console.log(`| ${name} | ${value} | ${goal} | ${met ? "yes" : "**no**"} |`);
console.log(`\nmedians of ${ROUNDS} rounds (± the spread: (max − min) / median); each point in a fresh process`);
writeFileSync(
  here("../../bench/growth.json"),
  `${JSON.stringify({ date: new Date().toISOString(), curves: [keys, properties], compactions, wide, goals }, null, 2)}\n`,
);
const curveOf = (c: Curve, field: keyof Point, title: string): Panel => ({ title, sizes: c.sizes, values: c.sizes.map((_, i) => figure(c, i, field)) });
const compactionOf = (field: keyof CompactionPoint, title: string): Panel => ({ title, sizes: JOURNAL, values: JOURNAL.map((_, i) => compactionAt(i, field)) });
writeFileSync(
  here("../../docs/growth.svg"),
  svg([
    curveOf(keys, "p50", "keys in one app → append→subscriber p50 (ms)"),
    curveOf(keys, "burstRate", "keys in one app → burst of 2,000 changes (changes/s)"),
    curveOf(properties, "burstRate", "properties in one schema → burst of 5,000 (changes/s)"),
    curveOf(properties, "rss", "properties in one schema → RSS after the burst (MB)"),
    compactionOf("ms", "journal lines → cdp compact (ms)"),
    compactionOf("peak", "journal lines → cdp compact's peak RSS (MB)"),
    compactionOf("p99", "journal lines → a line during the watcher's compaction, p99 (ms)"),
    compactionOf("fleetP99", "journal lines → the same in a fleet host, p99 (ms)"),
    compactionOf("steady", "journal lines → a watcher's RSS (MB)"),
  ]),
);
