// This host as a member of a fleet: it catches up with the fleet's log, applies every record in
// fleet order (its own included) through the journal to the table, reports what its schemas
// refuse, commits its batches (held and retried while etcd is away) and trims the log.
import type { HostContext } from "../types.js";
import { CdpError } from "../errors.js";
import { CommitTooLarge, MAX_LINE_BYTES_PER_COMMIT, MAX_RECORDS_PER_COMMIT, type FleetLog, type FleetRecord, type FleetSnapshot } from "./log.js";
import { isRefusal } from "./etcd.js";
import type { InboxPosition } from "../inbox/inbox.js";
import { stateLines } from "../store/compactor.js";
import { migrateChecked } from "../store/installed.js";
import {
  baseRecord,
  changeRecord,
  divergedRecord,
  markerRecord,
  scheduleDoneRecord,
  scheduleRecord,
  schemaRecord,
  type Commit,
  type SchemaEntries,
} from "../store/journal.js";
import type { ScheduleStep } from "../store/records.js";
import { linesAt, passedAt, type FleetRollouts, type RolloutStep } from "./rollouts.js";
import { appOfLine, parseLine } from "../lines/parse.js";
import { describeSchemaError, type Schemas } from "../schemas/schemas.js";
import type { AppliedChange } from "../store/table.js";
import { decodeValue, runValidators, validateChange, type ValidationContext, type ValidChange } from "../schemas/validate.js";
import { PendingConfigs, setIn, type AppConfig, type Configs } from "../lines/values.js";

/** How long after a trim this host's next one waits. */
const TRIM_GAP_MS = 1000;

/** What the member needs of the fleet's log: FleetLog on etcd, or an in-memory log in the unit tests. */
export type MemberLog = Pick<FleetLog, "head" | "follow" | "commitOrRefusal" | "recordsAfter" | "rollouts" | "trim">;

/**
 * What the member takes of the run (the HostContext: the table, the schemas in force and this
 * host's files, taking those a fleet migration moved to, the journal's path, seq, stopping, fault,
 * the log; `keep`: records kept in etcd when the log is trimmed, at least every 100 revisions), and
 * what is its own.
 */
export interface MemberOptions
  extends Pick<
    HostContext,
    "keep" | "table" | "schemas" | "schemaFiles" | "take" | "validators" | "journalPath" | "seq" | "stopping" | "fault" | "sealing" | "scheduled" | "log"
  > {
  fleet: MemberLog;
  /** This host's name in the fleet's records. */
  host: string;
  /** Append to this host's journal (retried while the disk refuses): its fsync to await, or false when cdp stops meanwhile. */
  journal: (text: string) => Promise<(() => Promise<void>) | false>;
  /** Why etcd cannot be used right now, or undefined once it can (for /readyz). */
  held: (reason: string | undefined) => void;
  /** Called with how many changes were applied (for compaction's count). */
  applied: (count: number) => void;
  /** The fleet's rollouts as this host knows them (loaded at join, then moved on by each step). */
  rollouts: FleetRollouts;
  /** A rollout's step was journaled and applied here. */
  rolloutStep: (step: RolloutStep) => void;
  /** A subscriber vetoes a change a rollout staged here: true when that aborts the rollout. */
  vetoRollout: (id: string, reason: string) => boolean;
  /** How long after a trim the next waits (1 s unless given). */
  trimGapMs?: number;
}

type Item = FleetRecord | FleetSnapshot;

/** Apps moved to other schema versions by a fleet revision. */
interface Migration {
  schemas: Schemas;
  apps: Map<string, AppConfig>;
  revision: number;
  source: string;
  time: string;
}

export class FleetMember {
  /** app.key (or app) -> why this host keeps its last good value instead of the fleet's. */
  readonly diverged = new Map<string, string>();
  /** How much one commit may hold (here: fleet.ts, and etcd's client with it, is loaded only in a fleet). */
  readonly maxRecordsPerCommit = MAX_RECORDS_PER_COMMIT;
  readonly maxLineBytesPerCommit = MAX_LINE_BYTES_PER_COMMIT;
  /** The last of this host's own records applied: after a crash, its inbox resumes there. */
  own: { seq: number; position: InboxPosition } | undefined;
  #options: MemberOptions;
  #queue: Item[] = [];
  #draining: Promise<void> | undefined;
  #waiters = new Set<{ revision: number; resolve: () => void }>();
  #following: { stop(): Promise<void> } | undefined;
  /** This host's changes being committed, by revision: applied as judged when they come back. */
  #judged = new Map<number, { line: string; change: ValidChange }>();
  #refusedHead: number | undefined; // what the last refused commit saw of the fleet's head
  #savedLines = 0; // the lines of the last state this host saved
  #trimming: { now: boolean; last: number; later?: NodeJS.Timeout } = { now: false, last: 0 };

  constructor(options: MemberOptions) {
    this.#options = options;
  }

  /**
   * Catch up with the fleet: true once this host has applied every committed change; false when
   * etcd cannot be reached (try again later). Throws a CdpError when this host cannot be a member.
   */
  async join(): Promise<boolean> {
    const { fleet, table, log } = this.#options;
    try {
      const head = await fleet.head();
      if (head < table.revision) {
        throw new CdpError(
          "bootstrap",
          `${this.#options.journalPath} is at revision ${table.revision} but the fleet's log is at ${head}: this data directory belongs to another fleet (or etcd lost its data); start with an empty one`,
        );
      }
      if (!this.#following) this.#options.rollouts.load(await fleet.rollouts(), table.revision);
      this.#following ??= await fleet.follow(table.revision, (item) => this.#take(item));
      await this.untilRevision(head);
    } catch (error) {
      if (error instanceof CdpError) throw error;
      if (isRefusal(error)) {
        throw new CdpError("usage", `etcd refused this host: ${error.message} (check --cluster-user, --cluster-password-file and the user's role)`);
      }
      this.#options.held(`cannot reach etcd: ${(error as Error).message}`);
      log.error({ err: error }, "cannot reach etcd: serving this host's last configuration, and trying again");
      return false;
    }
    this.#options.held(undefined);
    log.info({ revision: table.revision, host: this.#options.host }, "caught up with the fleet");
    return true;
  }

  /** Try `join` again with backoff until it succeeds (true) or cdp stops (false). */
  async joinLater(): Promise<boolean> {
    for (let delay = 500; !this.#options.stopping(); delay = Math.min(delay * 2, 5000)) {
      await new Promise((resolve) => setTimeout(resolve, delay));
      if (!this.#options.stopping() && (await this.join())) return true;
    }
    return false;
  }

  /**
   * Commit records after revision `after`. An unreachable etcd holds the batch, as a failing disk
   * does: retried with backoff. True: committed; false: another host committed first; undefined:
   * cdp is stopping. Throws CommitTooLarge for several records over one etcd request's size.
   */
  async commit(after: number, records: Omit<FleetRecord, "revision">[], judged: readonly (ValidChange | undefined)[] = []): Promise<boolean | undefined> {
    for (const [i, record] of records.entries())
      if (record.line !== "" && judged[i]) this.#judged.set(after + i + 1, { line: record.line, change: judged[i]! });
    for (let delay = 100, sentBefore = false; ; delay = Math.min(delay * 2, 5000), sentBefore = true) {
      try {
        // a refused comparison may be this very commit, sent before: here, after an error, or by
        // etcd's client, which sends again a transaction whose answer was lost (its member died)
        const result = await this.#options.fleet.commitOrRefusal(after, records, sentBefore);
        const committed = result === true || (result.mayBeOurs === true && (await this.#committedBefore(after, records, result.first)));
        this.#refusedHead = result === true ? undefined : result.head;
        this.#options.held(undefined);
        if (!committed) for (let i = 1; i <= records.length; i++) this.#judged.delete(after + i);
        return committed;
      } catch (error) {
        if (error instanceof CommitTooLarge) {
          for (let i = 1; i <= records.length; i++) this.#judged.delete(after + i);
          throw error;
        }
        this.#options.held(`cannot reach etcd: ${(error as Error).message}`);
        this.#options.log.error({ err: error, retryInMs: delay }, "cannot commit to the fleet: the batch is held and tried again");
      }
      await new Promise((resolve) => setTimeout(resolve, delay));
      if (this.#options.stopping()) {
        for (let i = 1; i <= records.length; i++) this.#judged.delete(after + i);
        return undefined;
      }
    }
  }

  /** Whether `commit` threw because its records are too many bytes for one etcd request (fleet.ts is not loaded outside a fleet). */
  tooLarge(error: unknown): boolean {
    return error instanceof CommitTooLarge;
  }

  /**
   * Whether an attempt whose answer was lost (etcd's leader died, a time-out; here, or inside
   * etcd's client) did commit `records` after all: then the fleet's next records are these, and
   * committing them again would apply the lines twice.
   */
  async #committedBefore(after: number, records: Omit<FleetRecord, "revision">[], seen: FleetRecord | undefined): Promise<boolean> {
    if (records.length === 0) return false;
    const first = seen ?? (await this.#options.fleet.recordsAfter(after, 1))[0];
    const ours = records[0]!;
    return first !== undefined && first.host === ours.host && first.seq === ours.seq && first.line === ours.line && first.time === ours.time;
  }

  /** The fleet's revision now. */
  head(): Promise<number> {
    return this.#options.fleet.head();
  }

  /** The fleet's head as the last refused commit saw it (read from etcd when no commit was refused). */
  headAfterRefusal(): Promise<number> {
    return this.#refusedHead === undefined ? this.head() : Promise.resolve(this.#refusedHead);
  }

  /** Resolves once the table has reached `revision`, or cdp stops (see `release`). */
  untilRevision(revision: number): Promise<void> {
    if (this.#options.table.revision >= revision || this.#options.stopping()) return Promise.resolve();
    return new Promise<void>((resolve) => this.#waiters.add({ revision, resolve }));
  }

  /** cdp stops: nobody waits any longer for the log to reach a revision. */
  release(): void {
    for (const waiter of this.#waiters) waiter.resolve();
    this.#waiters.clear();
  }

  /**
   * After this host committed up to revision `from`…`to`: every `keep` revisions (at least 100, and
   * at least as many as the last saved state had lines: saving it costs its size, so that cost is
   * spread over as many changes), save the state and trim the log. One trim at a time, and at most
   * one a second (`trimGapMs`): a burst's commits each crossed a multiple of `keep`, and their trims
   * ran at once, fought over the saved state and cost etcd a third of its work; one that falls due
   * meanwhile runs when the gap is over, with the state of then. Resolves once a trim run at once is done.
   */
  trimIfDue(from: number): Promise<void> {
    const every = Math.max(this.#options.keep, 100, this.#savedLines);
    if (this.#options.rollouts.baking().length > 0) return Promise.resolve(); // the saved state must be every host's: not while canaries differ
    if (Math.floor(this.#options.table.revision / every) <= Math.floor(from / every)) return Promise.resolve();
    if (this.#trimming.later) return Promise.resolve(); // one is coming, with the state of then
    return this.#mayTrimNow() ? this.#trimNow() : Promise.resolve(this.#trimLater());
  }

  /** How long until this host may trim again. */
  #trimGap(): number {
    return this.#trimming.last + (this.#options.trimGapMs ?? TRIM_GAP_MS) - Date.now();
  }

  /** No trim of this host's is running, and the gap after the last is over. */
  #mayTrimNow(): boolean {
    return !this.#trimming.now && this.#trimGap() <= 0;
  }

  /** Trim once the one running is done and the gap is over. */
  #trimLater(): void {
    this.#trimming.later ??= setTimeout(
      () => {
        this.#trimming.later = undefined;
        if (this.#options.stopping()) return;
        if (!this.#mayTrimNow()) this.#trimLater();
        else void this.#trimNow().catch((error: unknown) => this.#options.log.warn({ err: error }, "could not trim the fleet's log"));
      },
      Math.max(this.#trimGap(), 50),
    ).unref();
  }

  async #trimNow(): Promise<void> {
    const { keep, table, fleet, log } = this.#options;
    this.#trimming.now = true;
    try {
      const { revision, apps } = table.snapshot();
      const lines = await stateLines(new Map(Object.entries(apps)), this.#options.schemas(), this.#options.sealing);
      this.#savedLines = lines.length;
      const keepFrom = revision - keep + 1;
      await fleet.trim({ revision, lines, time: new Date().toISOString() }, keepFrom).then(
        (saved) => saved && log.info({ revision, keptFrom: keepFrom }, "trimmed the fleet's log in etcd"),
        (error: unknown) => log.warn({ err: error }, "could not trim the fleet's log in etcd; trying again later"),
      );
    } finally {
      this.#trimming.now = false;
      this.#trimming.last = Date.now();
    }
  }

  async stop(): Promise<void> {
    clearTimeout(this.#trimming.later);
    await this.#following?.stop();
  }

  // The records handed over together (a watch response's, a read's) are journaled with one fsync.
  #take(item: Item): void {
    this.#queue.push(item);
    this.#draining ??= Promise.resolve()
      .then(() => this.#drain())
      .catch((error: unknown) => this.#options.fault(error));
  }

  async #drain(): Promise<void> {
    while (this.#queue.length > 0) {
      const items = this.#queue.splice(0);
      for (let from = 0; from < items.length; ) {
        const item = items[from]!;
        let to = from + 1;
        if ("lines" in item) await this.#applyState(item);
        else {
          while (to < items.length && !("lines" in items[to]!)) to++;
          await this.#applyRecords(items.slice(from, to) as FleetRecord[]);
        }
        from = to;
      }
      this.#wake();
    }
    this.#draining = undefined;
  }

  /** Whoever waits for a revision the table has reached. */
  #wake(): void {
    for (const waiter of this.#waiters) {
      if (this.#options.table.revision < waiter.revision) continue;
      this.#waiters.delete(waiter);
      waiter.resolve();
    }
  }

  /** Records in fleet order: each checked against this host's schemas, journaled, then applied. */
  async #applyRecords(records: FleetRecord[]): Promise<void> {
    const { host, table, validators } = this.#options;
    let schemas = this.#options.schemas();
    const pending = new PendingConfigs(table);
    const changes: (AppliedChange | Migration | RolloutStep | number)[] = []; // a number: a revision with no change here
    const scheduled: ScheduleStep[] = [];
    let text = "";
    for (const record of records) {
      const own = record.host === host;
      if (own && record.position && !record.migration) this.own = { seq: record.seq, position: record.position };
      const source = `${record.host}:${record.source}`;
      const seq = own ? record.seq : this.#options.seq();
      if (record.rollout) {
        const taken = this.#rolloutStep(record, pending, { seq, source, position: own ? record.position : undefined });
        text += taken.text;
        for (const change of taken.changes) pending.set(change.app, change.key.split(".", 1)[0]!, change.topValue);
        changes.push(...(taken.changes.length > 0 ? taken.changes : [record.revision]), record.rollout);
        continue;
      }
      if (record.schedule) {
        text += this.#scheduleStep(record, { seq, source });
        changes.push(record.revision);
        scheduled.push(record.schedule);
        continue;
      }
      if (record.migration) {
        const taken = this.#migration(record, schemas, (app) => pending.config(app), seq, source);
        text += taken.text;
        if (taken.moved) {
          schemas = taken.moved.schemas;
          for (const [app, config] of taken.moved.apps) pending.replace(app, config);
          changes.push(taken.moved);
        } else changes.push(record.revision);
        continue;
      }
      // this host's own change was judged against this very state (the commit held only if the fleet was still there)
      const known = own ? this.#judged.get(record.revision) : undefined;
      this.#judged.delete(record.revision);
      const verdict =
        known?.line === record.line
          ? { ok: true as const, change: known.change }
          : this.#check(record.line, { schemas, validators, current: pending }, { revision: record.revision, from: record.host });
      if (!verdict.ok) {
        text += divergedRecord(record.revision, seq, record.time, source, verdict.reason);
        changes.push(record.revision);
        continue;
      }
      const { change } = verdict;
      this.diverged.delete(`${change.app}.${change.key}`);
      pending.set(change.app, change.path[0]!, change.topValue);
      const commit: Commit = { seq, time: record.time, source, position: own ? record.position : undefined };
      const applied: AppliedChange = { app: change.app, key: change.key, topValue: change.topValue, revision: record.revision, source, time: record.time };
      if (record.by !== undefined) commit.by = applied.by = record.by;
      if (record.reason !== undefined) commit.reason = applied.reason = record.reason;
      text += changeRecord(commit, record.revision, record.line);
      changes.push(applied);
    }
    // the fleet's log is the commit point: applied once in the page cache, then synced (16 hosts
    // on one disk queue their fsyncs: waiting for each before applying tripled the fan-out's latency)
    const sync = await this.#options.journal(text);
    if (!sync) return;
    try {
      for (const change of changes) {
        if (typeof change === "number") table.advance(change);
        else if ("step" in change) {
          this.#options.rollouts.take(change);
          this.#options.rolloutStep(change);
        } else if ("schemas" in change) {
          this.#options.take(change.schemas);
          table.applyAll(
            new Map([...change.schemas.keys()].map((app) => [app, change.apps.get(app) ?? table.config(app)])),
            change.revision,
            change.source,
            change.time,
          );
        } else table.apply(change);
      }
      for (const step of scheduled) this.#options.scheduled(step);
      // in force here: a host that lost a race judges again now, not after the sync (the fleet's log holds the records)
      this.#wake();
    } finally {
      await sync();
    }
    this.#options.applied(changes.filter((change) => !(typeof change === "object" && "step" in change)).length);
  }

  /** A change in time made or done by the fleet: a revision with no change of its own, and the schedule's record. */
  #scheduleStep(record: FleetRecord, at: { seq: number; source: string }): string {
    const step = record.schedule!;
    const commit = { seq: at.seq, time: record.time, source: at.source };
    if ("made" in step) {
      const { id, at: due, lines } = step.made;
      const app = appOfLine(lines[0] ?? "") ?? "-";
      const what = step.made.restore ? `the end of ${id} is due at ${due}` : `scheduled ${id}, due at ${due}`;
      return `${markerRecord({ ...commit, marker: `schedule:${id}:made:${app}`, reason: what }, record.revision)}${scheduleRecord(commit, step.made)}`;
    }
    const { id, outcome, note, app = "-" } = step.done;
    const why = note ?? `schedule ${id} ${outcome}`;
    return `${markerRecord({ ...commit, marker: `schedule:${id}:${outcome.replace(/\s/g, "_")}:${app}`, reason: why }, record.revision)}${scheduleDoneRecord(commit, step.done)}`;
  }

  /** A fleet's change line checked against this host's schemas; a refusal is reported, and its key kept as it was (diverged). */
  #check(line: string, judging: ValidationContext, fields: Record<string, unknown>): ReturnType<typeof validateChange> {
    const parsed = parseLine(line);
    const verdict = parsed.kind === "change" ? validateChange(judging, parsed) : { ok: false as const, reason: "not a change line" };
    if (verdict.ok) return verdict;
    const key = parsed.kind === "change" ? `${parsed.app}.${parsed.key}` : line;
    this.diverged.set(key, verdict.reason);
    this.#options.log.error(
      { ...fields, key, reason: verdict.reason },
      "this host's schemas refuse a change the fleet committed: it keeps its last good value",
    );
    return verdict;
  }

  /**
   * A rollout's step: the lines this host applies at it (checked against its schemas like any
   * record), journaled at the step's revision with why; or a marker when it applies nothing.
   */
  #rolloutStep(
    record: FleetRecord,
    current: Configs,
    at: { seq: number; source: string; position: InboxPosition | undefined },
  ): { text: string; changes: AppliedChange[] } {
    const { host } = this.#options;
    const step = record.rollout!;
    const { id } = step.rollout;
    const commit = { seq: at.seq, time: record.time, source: at.source, ...(at.position ? { position: at.position } : {}) };
    const applying = linesAt(step, host);
    if (!applying)
      return {
        text: markerRecord({ ...commit, marker: `rollout:${id}:${step.step}:${step.rollout.app}`, reason: passedAt(step, host) }, record.revision),
        changes: [],
      };
    const config = new PendingConfigs(current);
    const changes: AppliedChange[] = [];
    let text = "";
    // the changes a rollout stages here may be vetoed by a subscriber while it bakes: that aborts it
    const veto = step.step === "staged" || step.step === "widened" ? (reason: string) => this.#options.vetoRollout(id, reason) : undefined;
    const judging = { schemas: this.#options.schemas(), validators: this.#options.validators, current: config };
    for (const line of applying.lines) {
      const verdict = this.#check(line, judging, { revision: record.revision, rollout: id });
      if (!verdict.ok) continue;
      const { change } = verdict;
      this.diverged.delete(`${change.app}.${change.key}`); // in line with the fleet again
      config.set(change.app, change.path[0]!, change.topValue);
      text += changeRecord({ ...commit, reason: applying.reason, ...(step.rollout.by ? { by: step.rollout.by } : {}) }, record.revision, line);
      changes.push({
        app: change.app,
        key: change.key,
        topValue: change.topValue,
        revision: record.revision,
        source: at.source,
        time: record.time,
        reason: applying.reason,
        ...(veto ? { veto } : {}),
      });
    }
    if (changes.length === 0)
      text += markerRecord(
        { ...commit, marker: `rollout:${id}:${step.step}:${step.rollout.app}`, reason: `${applying.reason}: refused here` },
        record.revision,
      );
    return { text, changes };
  }

  /**
   * A migration the fleet committed: each app it names moves to that version when this host's
   * schema file is of it (its steps applied and checked, as at a single host); otherwise this host
   * keeps the app as it is, and reports it diverged until it runs with that version's file.
   */
  #migration(record: FleetRecord, schemas: Schemas, current: (app: string) => AppConfig, seq: number, source: string): { text: string; moved?: Migration } {
    const { schemaFiles: files, validators, log } = this.#options;
    const apps = new Map<string, AppConfig>();
    const entries: SchemaEntries = {};
    const taken = new Map(schemas);
    const refusals: string[] = [];
    for (const [app, entry] of Object.entries(record.migration!)) {
      const file = files.get(app);
      const held = schemas.get(app);
      if (!file || !held || entry.from === undefined) continue;
      const steps = new Map([...held.steps, ...file.steps, ...Object.entries(entry.steps ?? {}).map(([version, step]) => [Number(version), step] as const)]);
      let reason: string | undefined;
      if (file.version !== entry.version)
        reason = `the fleet moved ${app} to schema version ${entry.version} at revision ${record.revision}, but this host's ${app} schema file is version ${file.version}`;
      else {
        try {
          apps.set(app, migrateChecked(app, current(app), held.version, file, steps, validators.get(app) ?? []));
        } catch (error) {
          reason = (error as Error).message;
        }
      }
      if (reason) {
        this.diverged.set(app, reason);
        refusals.push(reason);
        log.error(
          { revision: record.revision, app, reason, from: record.host },
          "this host cannot take a migration the fleet committed: it keeps the app as it is",
        );
        continue;
      }
      this.diverged.delete(app);
      taken.set(app, file);
      entries[app] = { version: file.version, from: held.version, schema: file.source, steps: Object.fromEntries(steps) };
    }
    if (Object.keys(entries).length === 0)
      return { text: divergedRecord(record.revision, seq, record.time, source, refusals.join("; ") || "no app of this host") };
    const text = schemaRecord({ seq, time: record.time, source }, record.revision, entries);
    return { text, moved: { schemas: taken, apps, revision: record.revision, source, time: record.time } };
  }

  /**
   * This host was away past the records the fleet trimmed: it takes the fleet's state instead,
   * journals it as a base block, and subscribers hear only the keys whose value changed.
   */
  async #applyState(snapshot: FleetSnapshot): Promise<void> {
    const { table, validators, log } = this.#options;
    const schemas = this.#options.schemas();
    const apps = new Map<string, AppConfig>([...schemas].map(([app, schema]) => [app, schema.defaults]));
    let text = baseRecord(snapshot.revision, this.#options.seq(), snapshot.time);
    for (const line of snapshot.lines) {
      const parsed = parseLine(line);
      const info = parsed.kind === "change" ? schemas.get(parsed.app)?.key(parsed.path) : undefined;
      const decoded = parsed.kind === "change" && typeof info === "object" ? decodeValue(parsed.valueText, info) : undefined;
      if (parsed.kind !== "change" || !decoded?.ok) {
        const reason = decoded && !decoded.ok ? decoded.reason : typeof info === "string" ? info : "not a change this host knows";
        log.error(
          { revision: snapshot.revision, line: parsed.kind === "change" ? `${parsed.app}.${parsed.key}` : line, reason },
          "this host's schemas refuse part of the fleet's state",
        );
        if (parsed.kind === "change") this.diverged.set(`${parsed.app}.${parsed.key}`, reason);
        continue;
      }
      apps.set(parsed.app, setIn(apps.get(parsed.app) ?? {}, parsed.path, decoded.value));
      text += `${line}\n`;
    }
    for (const [app, schema] of schemas) {
      const config = structuredClone(apps.get(app)) as AppConfig;
      const refusal = schema.validate(config)
        ? runValidators(schema, validators.get(app), config)
        : describeSchemaError(schema, schema.validate.errors![0]!, config);
      if (refusal) {
        this.diverged.set(app, refusal);
        log.error({ revision: snapshot.revision, app, reason: refusal }, "this host's schemas refuse the fleet's state of an app: it keeps its own");
        apps.set(app, table.config(app));
      } else apps.set(app, config);
    }
    // the rollouts' steps up to the state's revision are in it, not in records this host will see
    const rollouts = await this.#options.fleet.rollouts().catch((error: unknown) => log.warn({ err: error }, "could not read the fleet's rollouts"));
    const sync = await this.#options.journal(text);
    if (!sync) return;
    await sync();
    if (rollouts) this.#options.rollouts.load(rollouts, snapshot.revision);
    table.applyAll(apps, snapshot.revision, "fleet-state", snapshot.time);
    log.info({ revision: snapshot.revision }, "took the fleet's state (the changes this host missed were trimmed from the fleet's log)");
  }
}
