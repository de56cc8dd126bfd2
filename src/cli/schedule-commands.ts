// Changes in time from the command line: `cdp push --at TIME | --for DURATION LINE…`, `cdp schedule`
// (what is due) and `cdp schedule cancel ID`. A schedule is asked for with one directive line in
// the inbox; the watcher judges it (a change that would be refused now is never scheduled).
import { join } from "node:path";
import { CdpError } from "../errors.js";
import { configsOf } from "../lines/values.js";
import { isDataDir } from "../store/datadir.js";
import { JOURNAL_FILE, replayJournal } from "../store/journal.js";
import { loadSchemas } from "../schemas/schemas.js";
import { judgeLines, newScheduleId, parseDuration, parseWhen, scheduleDirective, servedSchedule } from "../pipeline/schedule.js";
import { dataDir, type Io } from "./commands.js";
import { maskLine, sealLines } from "../schemas/sealing.js";
import { noPositionals, required, seconds, type Values } from "./options.js";
import { queueLines } from "./queue.js";

/** `cdp push --at TIME` / `--for DURATION` (or both: a window): judged now, then scheduled through the inbox. */
export async function pushInTime(values: Values, lines: string[], io: Io): Promise<number> {
  const dir = required(values, "dir");
  const at = values.at === undefined ? undefined : parseWhen(values.at);
  if (typeof at === "object") throw new CdpError("usage", at.reason);
  if (at !== undefined && Date.parse(at) <= Date.now()) throw new CdpError("usage", `--at ${values.at} is not in the future (${at})`);
  const forMs = values.for === undefined ? undefined : parseDuration(values.for);
  if (values.for !== undefined && forMs === undefined) throw new CdpError("usage", `--for takes a duration such as 90s, 30m, 2h, 1d, got "${values.for}"`);
  // judged now against the configuration in force: what would be refused today is never scheduled
  const { schemas: schemaDir, sealing } = await dataDir(values, { info: () => undefined });
  const schemas = await loadSchemas(schemaDir);
  const queued = sealLines(lines, schemas, sealing);
  const shown = lines.map((line) => maskLine(line, schemas));
  const { apps } = await replayJournal(join(dir, JOURNAL_FILE), schemas);
  const now = judgeLines(queued, { schemas, validators: new Map(), current: configsOf(apps) });
  if ("reason" in now) {
    io.stderr(`cdp: refused, nothing scheduled: ${now.reason}\n`);
    return 1;
  }
  const id = newScheduleId();
  const directive = scheduleDirective({ make: { id, lines: queued, ...(at === undefined ? {} : { at }), ...(forMs === undefined ? {} : { forMs }) } });
  const { receipts, watching } = await queueLines(dir, [directive], io, {
    reason: values.reason,
    wait: values["no-wait"] ? false : "if-watching",
    timeoutMs: seconds(values, "wait-timeout", 10),
  });
  const window = `${at === undefined ? "now" : `at ${at}`}${forMs === undefined ? "" : `, taken back ${values.for} later`}`;
  const receipt = receipts?.[0];
  if (receipt?.outcome === "rejected") {
    io.stderr(`cdp: refused, nothing scheduled: ${receipt.reason}\n`);
    return 1;
  }
  io.stdout(`${id}\n`);
  const what = shown.join(", ");
  if (!watching) io.stderr(`schedule ${id} (${what}, ${window}) is queued: it is made when the watcher reads it\n`);
  else if (receipt?.outcome === "waiting") io.stderr(`schedule ${id} was not judged within the wait: it waits in the inbox\n`);
  else if (receipt?.outcome === "accepted") io.stderr(`applied at revision ${receipt.revision}: ${what}; schedule ${id} takes it back ${values.for} later\n`);
  else io.stderr(`scheduled ${id}: ${what}, ${window}\n`);
  return 0;
}

/** `cdp schedule --dir D [--json]`: what is due; `cdp schedule cancel --dir D ID`. */
export async function scheduleCommand(values: Values, positionals: string[], io: Io): Promise<number> {
  const [action, ...rest] = positionals;
  if (action === "cancel") return cancel(values, rest, io);
  if (action !== undefined)
    throw new CdpError("usage", `unknown schedule action "${action}": cdp schedule --dir D lists what is due, cdp schedule cancel --dir D ID`);
  const { dir, schemas: schemaDir } = await dataDir(values);
  const schemas = await loadSchemas(schemaDir);
  const { schedules } = await replayJournal(join(dir, JOURNAL_FILE), schemas);
  const due = [...schedules.values()].sort((a, b) => Date.parse(a.at) - Date.parse(b.at)).map((entry) => servedSchedule(entry, schemas) as Row);
  if (values.json) {
    io.stdout(
      `${JSON.stringify(
        due.map(({ id, at, lines, by, reason, kind, restores }) => ({
          id,
          at,
          lines,
          by: by ?? null,
          reason: reason ?? null,
          kind,
          ...(restores ? { restores } : {}),
        })),
        null,
        2,
      )}\n`,
    );
    return 0;
  }
  if (due.length === 0) {
    io.stderr("nothing is scheduled\n");
    return 0;
  }
  for (const row of due) {
    const what = row.kind === "expiry" ? `put back: ${row.restores!.join(", ")}` : row.lines.join(", ");
    io.stdout(`${row.id}  ${row.at}  ${what}${row.by ? `  by ${row.by}` : ""}${row.reason ? `  (${row.reason})` : ""}\n`);
  }
  return 0;
}

type Row = { id: string; at: string; lines: string[]; by?: string; reason?: string; kind: string; restores?: string[] };

async function cancel(values: Values, rest: string[], io: Io): Promise<number> {
  noPositionals(rest, 1);
  const id = rest[0];
  if (id === undefined) throw new CdpError("usage", "say which schedule to cancel: cdp schedule cancel --dir D ID (cdp schedule lists them)");
  const dir = required(values, "dir");
  if (!(await isDataDir(dir))) await dataDir(values); // says what is wrong with it
  const { receipts, watching } = await queueLines(dir, [scheduleDirective({ cancel: { id } })], io, {
    reason: values.reason,
    wait: "if-watching",
    timeoutMs: seconds(values, "wait-timeout", 10),
  });
  const receipt = receipts?.[0];
  if (receipt?.outcome === "rejected") {
    io.stderr(`cdp: ${receipt.reason}\n`);
    return 1;
  }
  if (!watching) io.stderr(`the cancel of ${id} is queued: it is done when the watcher reads it\n`);
  else io.stderr(receipt?.outcome === "waiting" ? `the cancel of ${id} waits in the inbox\n` : `cancelled ${id}\n`);
  return 0;
}
