// The records cdp writes into the journal, one per accepted change (a `#` metadata comment, then
// the change line), and the markers that carry the inbox position, the schema upgrades, the vetoes
// a fleet host's refusals, and the schemas cdp took (with the steps between their versions):
//   # rev=12 seq=40 time=2026-11-24T01:13:36.123Z source=cdp.new:12 inbox=1234-5678@345/9f2c01d87a4be3c6 by=alice reason: why
//   ticker:interval:1500
import { isDeepStrictEqual } from "node:util";
import type { AnySchemaObject } from "ajv";
import type { InboxPosition } from "../inbox/inbox.js";
import type { Step } from "../schemas/migrations.js";
import type { KeyInfo } from "../schemas/schemas.js";
import { decodeValue } from "../schemas/validate.js";
import { jsonTypeOf } from "../lines/values.js";
import { isSealed, type SecretsKey } from "../lines/sealed.js";

export interface Commit {
  seq: number;
  time: string;
  source: string;
  /** Who made the change, and why (for change records). */
  by?: string;
  reason?: string;
  /** Where this host's inbox stands after the line (absent for a change another host of the fleet read). */
  position?: InboxPosition;
  /** A revision with no change line here (a rollout's step this host applies nothing for): what it was. */
  marker?: string;
}

/** One of cdp's metadata comments (an operator's comments are not). */
export const META = /^# (?:base )?(?:rev=\d+ )?seq=\d+ /;

export interface Meta {
  rev?: number;
  seq?: number;
  time?: string;
  source?: string;
  position?: InboxPosition;
  /** The change lines that follow are the compacted state at `rev`, not changes. */
  base?: boolean;
  /** Why the change was made. */
  reason?: string;
  by?: string;
  /** A revision without a change line (see Commit). */
  marker?: string;
}

// The form of almost every record's comment, read with one match (replay reads one per change).
const RECORD_META = /^# (?:rev=(\d+) )?seq=(\d+) time=(\S+) source=(\S+):(\d+) inbox=([^\s@]+)@(\d+)(?:\/([0-9a-f]+))?(?: by=(\S+))?(?: reason: (.*))?$/;

/** The fields of one of cdp's metadata comments; any other comment yields nothing. */
export function readMeta(comment: string): Meta {
  const record = RECORD_META.exec(comment);
  if (record) {
    const [, rev, seq, time, name, line, file, offset, check, by, reason] = record;
    const position: InboxPosition = { file: file!, offset: Number(offset), line: Number(line) };
    if (check !== undefined) position.check = check;
    const meta: Meta = { seq: Number(seq), time, source: `${name}:${line}`, position };
    if (rev !== undefined) meta.rev = Number(rev);
    if (by !== undefined) meta.by = by;
    if (reason !== undefined) meta.reason = reason;
    return meta;
  }
  if (!META.test(comment)) return {};
  const [head = "", reason] = comment.slice(2).split(" reason: ", 2);
  const words = head.split(" ");
  const fields = new Map(words.map((field) => field.split("=", 2) as [string, string]));
  const meta: Meta = {};
  if (words[0] === "base") meta.base = true;
  if (fields.has("rev")) meta.rev = Number(fields.get("rev"));
  meta.seq = Number(fields.get("seq"));
  meta.time = fields.get("time");
  meta.source = fields.get("source");
  if (reason !== undefined) meta.reason = reason;
  if (fields.has("by")) meta.by = fields.get("by");
  if (fields.has("marker")) meta.marker = fields.get("marker");
  const inbox = /^(.+)@(\d+)(?:\/([0-9a-f]+))?$/.exec(fields.get("inbox") ?? "");
  const line = /:(\d+)$/.exec(fields.get("source") ?? "");
  if (inbox && line) {
    meta.position = { file: inbox[1]!, offset: Number(inbox[2]), line: Number(line[1]) };
    if (inbox[3] !== undefined) meta.position.check = inbox[3];
  }
  return meta;
}

// (a hand-written change kept by compaction has no time: cdp never applied it at one)
function metaLine(commit: Omit<Commit, "time"> & { time?: string }, revision?: number): string {
  const rev = revision === undefined ? "" : `rev=${revision} `;
  const position = commit.position;
  const inbox = position ? ` inbox=${position.file}@${position.offset}${position.check === undefined ? "" : `/${position.check}`}` : "";
  const by = `${commit.marker === undefined ? "" : ` marker=${commit.marker.replace(/\s/g, "_")}`}${commit.by === undefined ? "" : ` by=${commit.by.replace(/\s/g, "_")}`}`;
  const reason = commit.reason === undefined ? "" : ` reason: ${commit.reason.replace(/[\r\n]+/g, " ")}`;
  const time = commit.time === undefined ? "" : ` time=${commit.time}`;
  return `# ${rev}seq=${commit.seq}${time} source=${commit.source}${inbox}${by}${reason}\n`;
}

/** The header of a base block: the change lines after it are the whole state at `revision`, not changes. */
export function baseRecord(revision: number, seq: number, time: string, source?: string): string {
  return `# base rev=${revision} seq=${seq} time=${time}${source === undefined ? "" : ` source=${source}`}\n`;
}

/** A fleet revision whose change this host's schemas refuse: the revision without its change, and why. */
export function divergedRecord(revision: number, seq: number, time: string, source: string, reason: string): string {
  return `# rev=${revision} seq=${seq} time=${time} source=diverged:${source} reason: ${reason.replace(/[\r\n]+/g, " ")}\n`;
}

/** A journal record for an accepted change: its metadata comment and the change line. */
export function changeRecord(commit: Commit, revision: number, line: string): string {
  return `${metaLine(commit, revision)}${line}\n`;
}

/**
 * A change kept by compaction that had no comment with its revision (a hand-written line): after
 * the base block it needs one, or it is read as part of that state. No time: it was never applied
 * by cdp at one, as its history says.
 */
export function handWrittenRecord(change: { revision: number; source: string; by?: string; reason?: string }, seq: number, record: string): string {
  return `${metaLine({ seq, source: change.source, by: change.by, reason: change.reason }, change.revision)}${record}`;
}

/** A fleet revision this host applies no change for (a rollout's step elsewhere): the revision, what it was, and where the inbox stands. */
export function markerRecord(commit: Commit & { marker: string }, revision: number): string {
  return metaLine(commit, revision);
}

/** A marker that records how far the inbox was processed when a batch ends with rejected lines. */
export function positionRecord(commit: Commit): string {
  const { by: _by, reason: _reason, ...position } = commit;
  return metaLine(position);
}

/** The revert of a vetoed change: a change record whose source names the vetoed revision. */
export function vetoRecord(veto: { revision: number; seq: number; time: string; vetoed: number; reason: string }, line: string): string {
  return `# rev=${veto.revision} seq=${veto.seq} time=${veto.time} source=veto:${veto.vetoed} reason: ${veto.reason}\n${line}\n`;
}

/** What the journal records of an app's schema when cdp takes it (at start or live). */
export interface SchemaEntry {
  /** The version in force from this record on, and the schema of that version (the installed release). */
  version: number;
  schema: AnySchemaObject;
  /** The version before, when the app was migrated here, and its schema when no earlier record holds it. */
  from?: number;
  fromSchema?: AnySchemaObject;
  /** Every step known for the app, by the version it leads to: the way back, even once the files no longer hold it. */
  steps?: Record<string, Step>;
  /** A migration a subscriber vetoed: the schema it had moved to (its version and fingerprint) is not taken again until the file changes. */
  vetoed?: { version: number; schema: string };
}

export type SchemaEntries = Record<string, SchemaEntry>;

const SCHEMA_RECORD = /^# (?:rev=(\d+) )?seq=(\d+) time=(\S+) source=(\S+)(?: reason: (.*?))? schemas: (\{.*\})$/;

/** Schemas taken (and apps migrated): a revision of its own when effective values change. */
export function schemaRecord(
  commit: { seq: number; time: string; source: string; reason?: string },
  revision: number | undefined,
  entries: SchemaEntries,
): string {
  const rev = revision === undefined ? "" : `rev=${revision} `;
  const reason = commit.reason === undefined ? "" : ` reason: ${commit.reason.replace(/[\r\n]+/g, " ").replaceAll(" schemas: {", " schemas {")}`;
  return `# ${rev}seq=${commit.seq} time=${commit.time} source=${commit.source.replace(/\s/g, "_")}${reason} schemas: ${JSON.stringify(entries)}\n`;
}

/** A schema record's fields, or undefined for any other line. */
export function readSchemaRecord(
  line: string,
): { rev?: number; seq: number; time: string; source: string; reason?: string; entries: SchemaEntries } | undefined {
  const match = line.includes(" schemas: {") ? SCHEMA_RECORD.exec(line) : null;
  if (!match) return undefined;
  const [, rev, seq, time, source, reason, json] = match;
  let entries: SchemaEntries;
  try {
    entries = JSON.parse(json!) as SchemaEntries;
  } catch {
    return undefined;
  }
  return {
    ...(rev === undefined ? {} : { rev: Number(rev) }),
    seq: Number(seq),
    time: time!,
    source: source!,
    ...(reason === undefined ? {} : { reason }),
    entries,
  };
}

/** A change that takes a key back (a render target's service refused the configuration): the reason, and the line. */
export function revertRecord(revert: { revision: number; seq: number; time: string; source: string; reason: string }, line: string): string {
  return `# rev=${revert.revision} seq=${revert.seq} time=${revert.time} source=${revert.source.replace(/\s/g, "_")} reason: ${revert.reason.replace(/[\r\n]+/g, " ")}\n${line}\n`;
}

/** A schema upgrade that changed effective values: a revision of its own, with no change line (written before schema records existed). */
export function upgradeRecord(seq: number, time: string, revision: number, files: string[]): string {
  return `# rev=${revision} seq=${seq} time=${time} source=schema:${files.map((file) => file.replace(/[\s,]/g, "_")).join(",")}\n`;
}

/**
 * The change line to journal: the value in the form that decodes back to exactly the same value
 * (a string as plain text where that is unambiguous, otherwise JSON); a secret one sealed with
 * `sealing` when given.
 */
export function encodeChange(app: string, key: string, value: unknown, info: KeyInfo, sealing?: SecretsKey): string {
  if (sealing && info.secret) return `${app}:${key}:${sealing.seal(encodeChange(app, key, value, info).slice(app.length + key.length + 2))}`;
  if (typeof value === "string" && !/[\r\n]/.test(value) && !isSealed(value)) {
    const plain = decodeValue(value, info);
    if (plain.ok && plain.value === value) return `${app}:${key}:${value}`;
  }
  const json = JSON.stringify(value);
  // JSON of a type the key takes other than string decodes back to itself; check the rest
  const plainJson = typeof value !== "string" && info.types !== null && !info.types.has("string") && info.types.has(jsonTypeOf(value));
  if (!plainJson) {
    const decoded = decodeValue(json, info);
    if (!decoded.ok || !isDeepStrictEqual(decoded.value, value)) throw new Error(`cannot encode ${app}.${key}`);
  }
  return `${app}:${key}:${json}`;
}

/** A change in time (`cdp push --at/--for`): due at `at`, its lines judged again then. */
export interface Scheduled {
  id: string;
  /** When it is due (RFC 3339). */
  at: string;
  /** The change lines as journaled (secret values sealed). */
  lines: string[];
  /** Once applied, taken back after this many ms (a window: --at with --for). */
  forMs?: number;
  /** An expiry: the lines that put each key back, and the line each key must still hold to be put back. */
  restore?: { line: string; holds: string }[];
  by?: string;
  reason?: string;
}

/** A schedule no longer due: fired, expired, cancelled, or refused when it fired; `note`: what an expiry left alone, and why. */
export interface ScheduleDone {
  id: string;
  outcome: string;
  by?: string;
  note?: string;
  /** The app of its lines (a fleet's history entry names it). */
  app?: string;
}

/** What a fleet's record says of a schedule: made (or a window's expiry, replacing it), or done. */
export type ScheduleStep = { made: Scheduled } | { done: ScheduleDone };

const SCHEDULE_RECORD = /^# seq=(\d+) time=(\S+) source=(\S+) schedule(-done)?: (\{.*\})$/;

/** A schedule made (or, an expiry, replaced): no revision of its own. */
export function scheduleRecord(commit: { seq: number; time: string; source: string }, entry: Scheduled): string {
  return `# seq=${commit.seq} time=${commit.time} source=${commit.source} schedule: ${JSON.stringify(entry)}\n`;
}

/** A schedule that is no longer due: fired, cancelled or refused when it fired (`outcome`), and by whom. */
export function scheduleDoneRecord(commit: { seq: number; time: string; source: string }, done: ScheduleDone): string {
  return `# seq=${commit.seq} time=${commit.time} source=${commit.source} schedule-done: ${JSON.stringify(done)}\n`;
}

/** A schedule record's fields, or undefined for any other line. */
export function readScheduleRecord(line: string): ScheduleStep | undefined {
  const match = line.includes(" schedule") ? SCHEDULE_RECORD.exec(line) : null;
  if (!match) return undefined;
  try {
    const body = JSON.parse(match[5]!) as Scheduled & { outcome: string };
    if (typeof body.id !== "string") return undefined;
    return match[4] ? { done: body } : { made: body };
  } catch {
    return undefined;
  }
}

/** The schedule a change came from, by its source (`schedule:ID`, or `HOST:schedule:ID` in a fleet). */
export function scheduledBy(source: string): string | undefined {
  return /(?:^|:)schedule:([\w.-]+)$/.exec(source)?.[1];
}
