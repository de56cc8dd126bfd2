// Changes in time: `cdp push --at TIME` (applied when due, judged again then) and `--for DURATION`
// (taken back when the time is up, unless the key was changed since). A schedule is asked for with
// a directive line in the inbox (`# schedule: {...}`, `# schedule-cancel: {...}`), so it is made
// exactly once, like any line; the journal records it (store/records.ts), and the pipeline fires
// it in its turn with the batches, recording in the same append that it fired: never twice.
import { randomUUID } from "node:crypto";
import { isDeepStrictEqual } from "node:util";
import { appOfLine, parseLine } from "../lines/parse.js";
import type { FleetRecord } from "../fleet/log.js";
import type { SecretsKey } from "../lines/sealed.js";
import type { Configs } from "../lines/values.js";
import { getIn, PendingConfigs } from "../lines/values.js";
import type { KeyInfo, Schemas } from "../schemas/schemas.js";
import { maskLine, sealLine } from "../schemas/sealing.js";
import { decodeValue, validateChange, type AppValidator, type ParsedChange, type ValidChange } from "../schemas/validate.js";
import {
  changeRecord,
  encodeChange,
  markerRecord,
  scheduleDoneRecord,
  scheduleRecord,
  type Commit,
  type ScheduleDone,
  type Scheduled,
} from "../store/records.js";
import { rejectionRecord } from "../store/rejects.js";

const MAKE = "# schedule: ";
const CANCEL = "# schedule-cancel: ";

/** What a schedule directive asks for. */
export type ScheduleRequest = { make: { id: string; at?: string; forMs?: number; lines: string[] } } | { cancel: { id: string } };

export const newScheduleId = (): string => `s-${randomUUID().slice(0, 8)}`;

export function scheduleDirective(request: ScheduleRequest): string {
  return "make" in request ? `${MAKE}${JSON.stringify(request.make)}` : `${CANCEL}${JSON.stringify(request.cancel)}`;
}

export const isScheduleDirective = (text: string): boolean => text.startsWith(MAKE) || text.startsWith(CANCEL);

/** A directive's request, or why it cannot be read. */
export function readScheduleDirective(text: string): ScheduleRequest | string {
  const cancel = text.startsWith(CANCEL);
  let body: { id?: unknown; at?: unknown; forMs?: unknown; lines?: unknown };
  try {
    body = JSON.parse(text.slice(cancel ? CANCEL.length : MAKE.length)) as typeof body;
  } catch {
    return "a schedule directive must be '# schedule: ' and JSON (use cdp push --at/--for or POST /v1/changes?at=…)";
  }
  if (typeof body?.id !== "string" || !/^[\w.-]{1,64}$/.test(body.id)) return "a schedule directive needs an id (letters, digits, '_', '.', '-')";
  if (cancel) return { cancel: { id: body.id } };
  if (!Array.isArray(body.lines) || body.lines.length === 0 || !body.lines.every((line) => typeof line === "string"))
    return "a schedule directive needs its change lines";
  if (body.at !== undefined && (typeof body.at !== "string" || Number.isNaN(Date.parse(body.at)))) return "a schedule's at must be an RFC 3339 time";
  if (body.forMs !== undefined && (!Number.isInteger(body.forMs) || (body.forMs as number) <= 0)) return "a schedule's for must be a positive duration";
  if (body.at === undefined && body.forMs === undefined) return "a schedule needs at, for, or both";
  return {
    make: {
      id: body.id,
      lines: body.lines as string[],
      ...(body.at === undefined ? {} : { at: new Date(body.at as string).toISOString() }),
      ...(body.forMs === undefined ? {} : { forMs: body.forMs as number }),
    },
  };
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `90m`, `30s`, `2h`, `1d`, `1h30m`: milliseconds, or undefined when it is not a duration. */
export function parseDuration(text: string): number | undefined {
  const parts = [...text.matchAll(/(\d+)(ms|s|m|h|d)/g)];
  if (parts.length === 0 || parts.map((part) => part[0]).join("") !== text) return undefined;
  const ms = parts.reduce((sum, [, count, unit]) => sum + Number(count) * UNITS[unit!]!, 0);
  return ms > 0 ? ms : undefined;
}

/** `--at`: an RFC 3339 time or `+DURATION` from now, as an ISO time; or why not. */
export function parseWhen(text: string, now = Date.now()): string | { reason: string } {
  if (text.startsWith("+")) {
    const ms = parseDuration(text.slice(1));
    return ms === undefined ? { reason: `--at +DURATION takes e.g. +90s, +30m, +2h, +1d, got "${text}"` } : new Date(now + ms).toISOString();
  }
  if (!/^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)$/.test(text) || Number.isNaN(Date.parse(text)))
    return { reason: `--at takes an RFC 3339 time (2026-12-24T02:00:00Z) or +DURATION (+90m), got "${text}"` };
  return new Date(text).toISOString();
}

export interface ScheduleContext {
  schemas: Schemas;
  validators: ReadonlyMap<string, readonly AppValidator[]>;
  /** The configs the lines are judged against (a batch's pending ones). */
  current: Configs;
  sealing?: SecretsKey;
}

/** Lines judged in order, each against what the ones before it set: the changes, or the first reason one is refused. */
export function judgeLines(lines: readonly string[], context: ScheduleContext): { changes: ValidChange[] } | { reason: string } {
  const pending = new PendingConfigs(context.current);
  const changes: ValidChange[] = [];
  for (const [i, line] of lines.entries()) {
    const parsed = parseLine(line);
    const which = lines.length === 1 ? maskLine(line, context.schemas) : `line ${i + 1} (${maskLine(line, context.schemas).slice(0, 80)})`;
    if (parsed.kind !== "change") return { reason: `${which} is not a change line${parsed.kind === "error" ? `: ${parsed.message}` : ""}` };
    const verdict = validateChange({ schemas: context.schemas, validators: context.validators, current: pending }, parsed as ParsedChange);
    if (!verdict.ok) return { reason: lines.length === 1 ? verdict.reason : `${which}: ${verdict.reason}` };
    pending.set(verdict.change.app, verdict.change.path[0]!, verdict.change.topValue);
    changes.push(verdict.change);
  }
  return { changes };
}

/** The lines as journaled (secret values sealed), and what puts each key they change back as it was before them. */
export function expiryOf(
  id: string,
  changes: readonly ValidChange[],
  context: ScheduleContext,
  at: string,
  said: { by?: string; reason?: string },
): Scheduled | { refused: string } {
  const restore: { line: string; holds: string }[] = [];
  const seen = new Set<string>();
  const encoded = changes.map((change) => encodeChange(change.app, change.key, change.value, keyOf(context.schemas, change), context.sealing));
  for (const change of changes) {
    const dotted = `${change.app}.${change.key}`;
    if (seen.has(dotted)) continue;
    seen.add(dotted);
    if (change.previous === undefined) return { refused: `${dotted} has no value before this change, so it could not be put back: set it first` };
    let last = changes.length - 1;
    while (changes[last]!.app !== change.app || changes[last]!.key !== change.key) last--;
    restore.push({ line: encodeChange(change.app, change.key, change.previous, keyOf(context.schemas, change), context.sealing), holds: encoded[last]! });
  }
  return { id, at, lines: encoded, restore, ...said };
}

const keyOf = (schemas: Schemas, change: ValidChange) => schemas.get(change.app)!.key(change.path) as KeyInfo;

/** Whether the key a restore line names still holds the value its schedule set (`holds`): else someone changed it since. */
export function stillHolds(holds: string, schemas: Schemas, current: Configs): boolean {
  const parsed = parseLine(holds);
  if (parsed.kind !== "change") return false;
  const info = schemas.get(parsed.app)?.key(parsed.path);
  if (typeof info !== "object") return false;
  const decoded = decodeValue(parsed.valueText, info);
  const [top, ...below] = parsed.path;
  return decoded.ok && isDeepStrictEqual(decoded.value, getIn(current.valueOf(parsed.app, top!), below));
}

/** A schedule as served and listed: its lines with secret values masked. */
export function servedSchedule(entry: Scheduled, schemas: Schemas): object {
  const { restore, lines, ...rest } = entry;
  return {
    ...rest,
    kind: restore ? "expiry" : "change",
    lines: lines.map((line) => maskLine(line, schemas)),
    ...(restore ? { restores: restore.map(({ line }) => maskLine(line, schemas)) } : {}),
  };
}

/** What firing a schedule writes and applies: a batch of its own, committed in its turn. */
export interface Fired {
  journalText: string;
  rejectText: string;
  /** Accepted changes with their revisions, and revisions that change nothing here (an expiry that left a key alone). */
  changes: { change: ValidChange; revision: number; line: string; reason?: string }[];
  markers: number[];
  rejected: string[];
  /** What is due next of it (a window's expiry), else that it is done (and what an expiry left alone, and why). */
  next: Scheduled | undefined;
  done: ScheduleDone | undefined;
}

/**
 * A due schedule judged against the configuration of this moment: its lines (each accepted or
 * rejected into cdp.rej with the reason), or for an expiry each key put back unless it was changed
 * since. Recorded in the same append: done, or its expiry due next. Nothing is written here.
 */
export function fireSchedule(entry: Scheduled, context: ScheduleContext & { revision: number; seq: number; time: string }): Fired {
  const { id } = entry;
  const source = `schedule:${id}`;
  const commit: Commit = { seq: context.seq, time: context.time, source, ...(entry.by === undefined ? {} : { by: entry.by }) };
  const fired: Fired = { journalText: "", rejectText: "", changes: [], markers: [], rejected: [], next: undefined, done: undefined };
  const done = (outcome: string, notes: string[] = []) => {
    const app = appOfLine(entry.lines[0] ?? "");
    fired.done = {
      id,
      outcome,
      ...(entry.by === undefined ? {} : { by: entry.by }),
      ...(notes.length ? { note: notes.join("; ") } : {}),
      ...(app ? { app } : {}),
    };
    fired.journalText += scheduleDoneRecord(commit, fired.done);
  };
  const pending = new PendingConfigs(context.current);
  let revision = context.revision;
  const apply = (line: string, reason: string | undefined): ValidChange | undefined => {
    const judged = judgeLines([line], { ...context, current: pending });
    if ("reason" in judged) {
      fired.rejected.push(judged.reason);
      fired.rejectText += rejectionRecord({ seq: context.seq, time: context.time, source, reason: judged.reason, text: sealed(line, context) });
      return undefined;
    }
    const [change] = judged.changes as [ValidChange];
    pending.set(change.app, change.path[0]!, change.topValue);
    revision++;
    const encoded = encodeChange(change.app, change.key, change.value, keyOf(context.schemas, change), context.sealing);
    fired.journalText += changeRecord({ ...commit, ...(reason === undefined ? {} : { reason }) }, revision, encoded);
    fired.changes.push({ change, revision, line: encoded, ...(reason === undefined ? {} : { reason }) });
    return change;
  };
  if (entry.restore) {
    const notes: string[] = [];
    for (const { line, holds } of entry.restore) {
      const parsed = parseLine(line) as ParsedChange;
      if (stillHolds(holds, context.schemas, pending)) {
        apply(line, `the end of ${entry.reason ? `"${entry.reason}" (${id})` : id}: put back as it was`);
        continue;
      }
      revision++;
      const why = `the end of ${id} left ${parsed.app}.${parsed.key} as it was: it was changed since`;
      fired.journalText += markerRecord({ ...commit, marker: `schedule:${id}:kept:${parsed.app}`, reason: why }, revision);
      fired.markers.push(revision);
      notes.push(why);
    }
    done("expired", notes);
    return fired;
  }
  const applied = entry.lines.map((line) => apply(line, entry.reason)).filter((change) => change !== undefined);
  if (entry.forMs !== undefined && applied.length > 0) {
    const expiry = expiryOf(id, applied, context, new Date(Date.parse(context.time) + entry.forMs).toISOString(), {
      ...(entry.by === undefined ? {} : { by: entry.by }),
      ...(entry.reason === undefined ? {} : { reason: entry.reason }),
    });
    if (!("refused" in expiry)) {
      fired.next = expiry;
      fired.journalText += scheduleRecord(commit, expiry);
      return fired;
    }
    fired.rejected.push(expiry.refused);
  }
  done(applied.length === entry.lines.length ? "fired" : "refused in part");
  return fired;
}

/** A fired schedule as a fleet's records: its changes, then what is due next of it or that it is done (one commit). */
export function fleetRecordsOf(entry: Scheduled, fired: Fired, host: string, seq: number, time: string): Omit<FleetRecord, "revision">[] {
  const at = { host, source: `schedule:${entry.id}`, time, seq };
  const by = entry.by === undefined ? {} : { by: entry.by };
  const records: Omit<FleetRecord, "revision">[] = fired.changes.map(({ line, reason }) => ({
    line,
    ...at,
    ...by,
    ...(reason === undefined ? {} : { reason }),
  }));
  records.push({ line: "", ...at, schedule: fired.next ? { made: fired.next } : { done: fired.done! } });
  return records;
}

const sealed = (line: string, context: ScheduleContext) => (context.sealing ? sealLine(line, context.schemas, context.sealing) : line);
