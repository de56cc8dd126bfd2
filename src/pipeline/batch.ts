// Judging one batch of inbox lines: a function of its inputs, with no I/O. Each line is judged
// against the state the accepted lines before it leave; the result says what to write (the
// records for cdp.rej and for the commit point) and what to announce once that is durable.
import type { Logger } from "pino";
import type { FleetRecord } from "../fleet/log.js";
import { INBOX_FILE, type InboxBatch, type InboxLine } from "../inbox/inbox.js";
import { changeRecord, encodeChange, positionRecord, type Commit } from "../store/journal.js";
import { rejectionRecord } from "../store/rejects.js";
import { sealLine } from "../schemas/sealing.js";
import { appOfLine } from "../lines/parse.js";
import { expiryOf, isScheduleDirective, judgeLines, readScheduleDirective, type ScheduleContext } from "./schedule.js";
import { scheduleDoneRecord, scheduleRecord, type Scheduled } from "../store/records.js";
import type { SecretsKey } from "../lines/sealed.js";
import type { KeyInfo, Schemas } from "../schemas/schemas.js";
import type { HostStatus } from "../fleet/hosts.js";
import {
  inProgressReason,
  isRolloutDirective,
  judgeRollout,
  readRolloutDirective,
  rolloutExpiry,
  type Rollout,
  type RolloutContext,
  type RolloutStep,
} from "../fleet/rollouts.js";
import { judgeLine, type Outcome, type AppValidator, type ValidChange } from "../schemas/validate.js";
import { PendingConfigs, type Configs } from "../lines/values.js";

/** What became of one inbox line, once its batch is durable. */
export interface LineOutcome {
  number: number;
  text: string;
  outcome: "accepted" | "rejected" | "ignored";
  revision?: number;
  reason?: string;
}

/** What a batch is judged against. */
export interface BatchContext {
  schemas: Schemas;
  validators: ReadonlyMap<string, readonly AppValidator[]>;
  maxLineBytes: number;
  /** The apps' configs before the batch (the table's). */
  configs: Configs;
  /** The table's revision and the count of processed lines before the batch. */
  revision: number;
  seq: number;
  time: string;
  /** In a fleet, accepted changes become records of the fleet's log instead of journal text. */
  fleetHost?: string;
  /** In a fleet: the rollouts this host knows, and the fleet's hosts (listed when the batch holds a rollout directive). */
  rollouts?: { known: RolloutContext["rollouts"]; hosts: HostStatus[] | string };
  /** Keep every line's outcome (for those who asked: the sidecar's POST). */
  details: boolean;
  /** Secret values are journaled (and committed, and rejected) sealed with it. */
  sealing?: SecretsKey;
  /** The changes in time still due (a cancel names one of them). */
  schedules?: ReadonlyMap<string, Scheduled>;
  log?: Logger;
}

/** An accepted change, with what the table and its subscribers are told. */
export interface JudgedChange {
  change: ValidChange;
  revision: number;
  source: string;
  time: string;
  by?: string;
  reason?: string;
}

export interface JudgedBatch {
  changes: JudgedChange[];
  rejections: { source: string; reason: string }[];
  /** Every line's outcome, when asked for. */
  lines: LineOutcome[] | undefined;
  /** cdp.rej records, and the journal records of a single host (changes, then a position marker). */
  rejectText: string;
  journalText: string;
  /** A fleet's records, in order. */
  fleetRecords: Omit<FleetRecord, "revision">[];
  /** The last line that counts (a change or a rejection): where the inbox stands once this is committed. */
  last: { commit: Commit; accepted: boolean } | undefined;
  /** The count of processed lines after the batch. */
  seq: number;
  /** Schedules made (an expiry replaces its schedule) and no longer due, in order. */
  schedules: (Scheduled | { done: string })[];
}

export function judgeBatch(batch: InboxBatch, context: BatchContext): JudgedBatch {
  const { schemas, time } = context;
  // what the accepted lines set, not a config per line: memory in proportion to what the batch changes
  const pending = new PendingConfigs(context.configs);
  const judging = { schemas, validators: context.validators, maxLineBytes: context.maxLineBytes, current: pending, sealing: context.sealing, log: context.log };
  const judged: JudgedBatch = {
    changes: [],
    rejections: [],
    lines: context.details ? [] : undefined,
    rejectText: "",
    journalText: "",
    fleetRecords: [],
    last: undefined,
    seq: context.seq,
    schedules: [],
  };
  let revision = context.revision;
  let ended: Commit | undefined; // the batch ends with lines ignored after the last committed one
  let said: { by?: string; reason?: string } = {}; // `# by:` and `# reason:` for the next change line
  const rollouts = rolloutsInBatch(context.rollouts);
  let schedules: Map<string, Scheduled> | undefined; // copied once a batch holds a schedule directive
  // an accepted change: journaled (in a fleet, a record of the fleet's log), pending for the lines after it
  const accept = (change: ValidChange, commit: Commit) => {
    pending.set(change.app, change.path[0]!, change.topValue);
    const encoded = encodeChange(change.app, change.key, change.value, schemas.get(change.app)!.key(change.path) as KeyInfo, context.sealing);
    revision++;
    const { source } = commit;
    // in a fleet the change is committed to the fleet's log; the member journals and applies it
    if (context.fleetHost !== undefined) {
      // no spreads on this path (nor below): V8 builds such objects in its slow path, per line
      const record: Omit<FleetRecord, "revision"> = { line: encoded, host: context.fleetHost, source, time, seq: commit.seq, position: commit.position! };
      if (commit.by !== undefined) record.by = commit.by;
      if (commit.reason !== undefined) record.reason = commit.reason;
      judged.fleetRecords.push(record);
    } else judged.journalText += changeRecord(commit, revision, encoded);
    const judgedChange: JudgedChange = { change, revision, source, time };
    if (commit.by !== undefined) judgedChange.by = commit.by;
    if (commit.reason !== undefined) judgedChange.reason = commit.reason;
    judged.changes.push(judgedChange);
  };
  for (const line of batch.lines) {
    let outcome: Outcome | { kind: "step"; step: RolloutStep } | ScheduleOutcome = outcomeOf(line, judging, rollouts);
    if (outcome.kind === "ignore" && isRolloutDirective(line.text)) {
      outcome = stepOf(line, judging, rollouts, {
        source: `${INBOX_FILE}:${line.number}`,
        seq: judged.seq + 1,
        revision: revision + 1,
        time,
        host: context.fleetHost,
        ...said,
      });
    }
    if (outcome.kind === "ignore" && isScheduleDirective(line.text)) {
      schedules ??= new Map(context.schedules);
      outcome = scheduleOf(line.text, judging, schedules, { time, ...said });
      if (outcome.kind === "schedule") {
        if (outcome.made) schedules.set(outcome.made.id, outcome.made);
        if (outcome.done) schedules.delete(outcome.done.id);
      }
    }
    if (outcome.kind === "ignore") {
      said = { ...said, ...directive(line.text) };
      judged.lines?.push({ number: line.number, text: line.text, outcome: "ignored" });
      // the marker's source names its own line: replay takes the line number from it
      if (line.check !== undefined && judged.last && !batch.late)
        ended = {
          ...judged.last.commit,
          source: `${INBOX_FILE}:${line.number}`,
          position: { file: batch.file, offset: line.end, line: line.number, check: line.check },
        };
      continue;
    }
    const source = `${INBOX_FILE}:${line.number}`;
    let position = batch.late;
    if (!position) {
      position = { file: batch.file, offset: line.end, line: line.number };
      if (line.check !== undefined) position.check = line.check;
    }
    const commit: Commit = { seq: ++judged.seq, time, source, position };
    if (said.by !== undefined) commit.by = said.by;
    if (said.reason !== undefined) commit.reason = said.reason;
    if (said.by !== undefined || said.reason !== undefined) said = {};
    if (outcome.kind === "step") {
      // a rollout's step: one fleet revision with no change line of its own
      revision++;
      judged.fleetRecords.push({ line: "", host: context.fleetHost!, source, time, seq: commit.seq, position: commit.position!, rollout: outcome.step });
      // a temporary rollout promoted by hand: its end is due from now
      const expiry = rolloutExpiry(outcome.step, time);
      if (expiry) {
        revision++;
        judged.fleetRecords.push({ line: "", host: context.fleetHost!, source, time, seq: commit.seq, position: commit.position!, schedule: { made: expiry } });
      }
      judged.lines?.push({ number: line.number, text: line.text, outcome: "accepted", revision });
    } else if (outcome.kind === "accept") {
      accept(outcome.change, commit);
      judged.lines?.push({ number: line.number, text: line.text, outcome: "accepted", revision });
    } else if (outcome.kind === "schedule") {
      for (const change of outcome.changes) accept(change, commit);
      const record = { seq: commit.seq, time, source };
      if (context.fleetHost !== undefined) {
        // a fleet's record (a revision of its own): every host journals it and knows what is due
        revision++;
        const step = outcome.made ? { made: outcome.made } : { done: outcome.done! };
        judged.fleetRecords.push({ line: "", host: context.fleetHost, source, time, seq: commit.seq, position: commit.position!, schedule: step });
      } else {
        if (outcome.made) judged.journalText += scheduleRecord(record, outcome.made);
        if (outcome.done) judged.journalText += scheduleDoneRecord(record, outcome.done);
        judged.schedules.push(outcome.made ?? { done: outcome.done!.id });
      }
      const accepted = outcome.changes.length > 0;
      judged.lines?.push({ number: line.number, text: line.text, outcome: accepted ? "accepted" : "ignored", ...(accepted ? { revision } : {}) });
      judged.last = { commit, accepted };
      continue;
    } else {
      const text = context.sealing ? sealLine(line.text, schemas, context.sealing) : line.text;
      judged.rejectText += rejectionRecord({ seq: commit.seq, time, source, reason: outcome.reason, text, fullLength: line.tooLong });
      judged.rejections.push({ source, reason: outcome.reason });
      judged.lines?.push({ number: line.number, text: line.text, outcome: "rejected", reason: outcome.reason });
    }
    judged.last = { commit, accepted: outcome.kind !== "reject" };
  }
  // a single host's journal alone says where to resume: a batch that ends with anything but a
  // change ends with a position marker
  if (context.fleetHost === undefined && judged.last) {
    if (ended) judged.journalText += positionRecord(ended);
    else if (!judged.last.accepted) judged.journalText += positionRecord(judged.last.commit);
  }
  return judged;
}

/** The rollouts known before the batch, and those its lines started or ended (their records have not come back yet). */
function rolloutsInBatch(fleet: BatchContext["rollouts"]) {
  const steps = new Map<string, Rollout>();
  return {
    hosts: fleet?.hosts,
    get: (id: string) => steps.get(id) ?? fleet?.known.get(id),
    inProgress(app: string): Rollout | undefined {
      for (const rollout of steps.values()) if (rollout.app === app) return rollout.state === "baking" ? rollout : undefined;
      return fleet?.known.inProgress(app);
    },
    took: (rollout: Rollout) => void steps.set(rollout.id, rollout),
  };
}

type RolloutsInBatch = ReturnType<typeof rolloutsInBatch>;
type Judging = Parameters<typeof judgeLine>[1] & Pick<RolloutContext, "current" | "sealing"> & { log?: Logger };
type StepAt = Pick<RolloutContext, "source" | "seq" | "revision" | "time" | "by" | "reason"> & { host: string | undefined };

/** A line's outcome in a batch: a change to an app in a rollout is refused. */
function outcomeOf(line: InboxLine, judging: Judging, rollouts: RolloutsInBatch): Outcome {
  const outcome = judgeLine(line, judging, judging.log);
  if (outcome.kind !== "accept") return outcome;
  const busy = rollouts.inProgress(outcome.change.app);
  return busy ? { kind: "reject", reason: inProgressReason(busy) } : outcome;
}

/** A rollout's request (a `# rollout:` line) judged as the step it asks for, or refused. */
function stepOf(line: InboxLine, judging: Judging, rollouts: RolloutsInBatch, at: StepAt): Outcome | { kind: "step"; step: RolloutStep } {
  const request = readRolloutDirective(line.text)!;
  if (typeof request === "string") return { kind: "reject", reason: request };
  if (!rollouts.hosts || at.host === undefined)
    return { kind: "reject", reason: "rollouts are for a fleet: this watcher is a single host (cdp watch --cluster …)" };
  let verdict: ReturnType<typeof judgeRollout>;
  try {
    verdict = judgeRollout(request, { ...judging, ...at, host: at.host, rollouts, hosts: rollouts.hosts });
  } catch (error) {
    judging.log?.error({ err: error, line: line.number }, "judging a rollout request failed");
    return { kind: "reject", reason: `the rollout could not be judged: ${(error as Error).message}` };
  }
  if ("reason" in verdict) return { kind: "reject", reason: verdict.reason };
  rollouts.took(verdict.step.rollout);
  return { kind: "step", step: verdict.step };
}

/** `# by: NAME` or `# reason: TEXT`: who makes the next change line, and why. */
function directive(text: string): { by?: string } | { reason?: string } {
  const said = /^\s*#\s*(by|reason):\s*(.*?)\s*$/.exec(text);
  if (!said || said[2] === "") return {};
  return said[1] === "by" ? { by: said[2]!.replace(/\s+/g, "_").slice(0, 128) } : { reason: said[2]!.slice(0, 1000) };
}

/** Each line's outcome, once durable (a failed write must not look accepted); a burst is summed up, its lines at debug level. */
export function logOutcomes(batch: InboxBatch, judged: JudgedBatch, log: Logger, read = batch.lines.length): void {
  const burst = read > 100; // `read`: the lines read at once, of which a fleet commits this batch as one part
  if (!burst || log.isLevelEnabled("debug")) {
    const level = burst ? "debug" : "info";
    for (const { change, revision, source } of judged.changes)
      log[level]({ app: change.app, key: change.key, value: change.secret ? "[secret]" : change.value, revision, source }, "accepted");
    for (const fields of judged.rejections) log[burst ? "debug" : "warn"](fields, "rejected");
  }
  if (burst) {
    const revision = judged.changes.at(-1)?.revision;
    const fields = {
      accepted: judged.changes.length,
      rejected: judged.rejections.length,
      ...(revision === undefined ? {} : { revision }),
      lines: `${INBOX_FILE}:${batch.lines[0]!.number}-${batch.lines.at(-1)!.number}`,
    };
    if (judged.rejections.length > 0) log.warn(fields, "batch applied, with rejections (see cdp.rej)");
    else log.info(fields, "batch applied");
  }
}

/** A batch's lines in parts of at most `maxLines` lines and `maxBytes` bytes (a longer line alone). */
export function partsOf(lines: InboxLine[], { maxLines, maxBytes }: { maxLines: number; maxBytes: number }): InboxLine[][] {
  if (lines.length <= maxLines && maxBytes === Infinity) return [lines];
  const parts: InboxLine[][] = [];
  let [part, bytes]: [InboxLine[], number] = [[], 0];
  let previousEnd = Infinity;
  for (const line of lines) {
    // a line's bytes are where it ends less where the line before it ended (at most: a newline more)
    const size = line.end > previousEnd ? line.end - previousEnd : Buffer.byteLength(line.text);
    previousEnd = line.end;
    if (part.length > 0 && (part.length === maxLines || bytes + size > maxBytes)) {
      parts.push(part);
      [part, bytes] = [[], 0];
    }
    part.push(line);
    bytes += size;
  }
  if (part.length > 0) parts.push(part);
  return parts;
}

type ScheduleOutcome = { kind: "schedule"; changes: ValidChange[]; made?: Scheduled; done?: { id: string; outcome: string; by?: string } };

/**
 * A schedule directive judged: `--at` is judged now (refused when it would be refused today) and
 * recorded; `--for` alone is applied now, and its expiry recorded; a cancel ends one that is due.
 */
function scheduleOf(
  text: string,
  judging: ScheduleContext,
  schedules: ReadonlyMap<string, Scheduled>,
  said: { time: string; by?: string; reason?: string },
): ScheduleOutcome | { kind: "reject"; reason: string } {
  const request = readScheduleDirective(text);
  if (typeof request === "string") return { kind: "reject", reason: request };
  const who = { ...(said.by === undefined ? {} : { by: said.by }), ...(said.reason === undefined ? {} : { reason: said.reason }) };
  if ("cancel" in request) {
    const { id } = request.cancel;
    if (!schedules.has(id)) return { kind: "reject", reason: `no schedule ${id} is due (cdp schedule lists them)` };
    const app = appOfLine(schedules.get(id)!.lines[0] ?? "");
    return { kind: "schedule", changes: [], done: { id, outcome: "cancelled", ...(said.by === undefined ? {} : { by: said.by }), ...(app ? { app } : {}) } };
  }
  const { id, at, forMs, lines } = request.make;
  if (schedules.has(id)) return { kind: "reject", reason: `schedule ${id} is already due` };
  const judgedLines = judgeLines(lines, judging);
  if ("reason" in judgedLines) return { kind: "reject", reason: judgedLines.reason };
  if (at !== undefined) {
    const encoded = judgedLines.changes.map((change) =>
      encodeChange(change.app, change.key, change.value, judging.schemas.get(change.app)!.key(change.path) as KeyInfo, judging.sealing),
    );
    return { kind: "schedule", changes: [], made: { id, at, lines: encoded, ...(forMs === undefined ? {} : { forMs }), ...who } };
  }
  const expiry = expiryOf(id, judgedLines.changes, judging, new Date(Date.parse(said.time) + forMs!).toISOString(), who);
  if ("refused" in expiry) return { kind: "reject", reason: expiry.refused };
  return { kind: "schedule", changes: judgedLines.changes, made: expiry };
}
