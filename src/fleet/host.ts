// What a fleet host adds to the pipeline, behind its commit point: the member (this host in the
// fleet's log), the commit point that commits to etcd, the batches in flight (committed, not yet
// back through the log), the journal's turns (the member's appends and compaction), what this
// host tells the fleet of itself, and the rollout clock. The pipeline knows it only as a FleetPlug
// (types.ts); index.ts loads this module, and etcd's client with it, only in a fleet.
import type { Logger } from "pino";
import type { InboxPosition } from "../inbox/inbox.js";
import { type Configs, PendingConfigs } from "../lines/values.js";
import type { JudgedBatch } from "../pipeline/batch.js";
import type { CommitPoint } from "../pipeline/commit.js";
import { Turns } from "../pipeline/turns.js";
import { CdpError } from "../errors.js";
import type { DurableFile, Files } from "../store/durable.js";
import type { HeldWrites } from "../store/held.js";
import type { ConfigTable } from "../store/table.js";
import { positionRecord } from "../store/journal.js";
import type { FleetPlug, HostContext } from "../types.js";
import type { HostStatus } from "./hosts.js";
import type { FleetLog, FleetRecord } from "./log.js";
import { FleetMember } from "./member.js";
import { RolloutClock } from "./rollout-clock.js";
import type { FleetRollouts, Rollout } from "./rollouts.js";
import { moveFleet } from "./versions.js";

/** This host's part in the fleet `log` under the name `host`; `downgrade`: it may move the fleet's schemas down. */
export function openFleetHost(log: FleetLog, host: string, downgrade: boolean, context: HostContext): FleetPlug {
  return new FleetHost(log, host, downgrade, context);
}

class FleetHost implements FleetPlug {
  readonly commitPoint: CommitPoint;
  readonly #log: FleetLog;
  readonly #host: string;
  readonly #downgrade: boolean;
  readonly #context: HostContext;
  readonly #member: FleetMember;
  readonly #clock: RolloutClock;
  // the member's journal appends and compaction take turns of their own, so that compaction
  // never swaps the file under a write
  readonly #journalTurns = new Turns();
  // This host's committed batches that have not come back through the log yet: the revision they
  // end at, and the configs of the apps they change. The next batch is judged against that state
  // (etcd's compare-and-swap on the head guarantees it) and committed while they travel.
  #inFlight: { revision: number; apps: PendingConfigs } | undefined;
  #announcing: NodeJS.Timeout | undefined;

  constructor(log: FleetLog, host: string, downgrade: boolean, context: HostContext) {
    [this.#log, this.#host, this.#downgrade, this.#context] = [log, host, downgrade, context];
    const { table, files, writes, stopping, fault } = context;
    const journalTurn = <T>(task: () => Promise<T>) => this.#journalTurns.run(task);
    this.#clock = new RolloutClock({
      dir: context.dir,
      host,
      fleet: log,
      member: () => this.#member,
      table,
      schemas: context.schemas,
      inTurn: context.inTurn,
      seq: context.seq,
      stopping,
      stepped: context.stepped,
      reject: context.reject,
      fault,
      log: context.log,
    });
    this.#member = new FleetMember({
      ...context,
      fleet: log,
      host,
      journal: (text) => unsyncedInTurn(journalTurn, () => writes.appendUnsynced(files.journal, text)),
      held: (reason) => (writes.reason = reason),
      applied: (count) => context.applied(count, this.#member.diverged.size > 0, journalTurn),
      rollouts: this.#clock.known,
      rolloutStep: (step) => this.#clock.stepApplied(step),
      vetoRollout: (id, reason) => this.#clock.veto(id, reason),
      log: context.log.child({ stage: "fleet" }),
    });
    this.commitPoint = fleetCommit(files, writes, { member: this.#member, table, journalTurn, stopping }, context.log);
  }

  get diverged(): ReadonlyMap<string, string> {
    return this.#member.diverged;
  }

  async join(first: boolean, at: { seq: number; position: InboxPosition | undefined }): Promise<false | { seq: number; position: InboxPosition | undefined }> {
    const member = this.#member;
    await this.#sameSecretsKey();
    if (!(first ? await member.join() : await member.joinLater())) return false;
    const own = member.own && member.own.seq > at.seq ? { seq: member.own.seq, position: member.own.position } : at;
    // what is due, as the fleet keeps it (the log before a trim is gone)
    await this.#log
      .schedules()
      .then((all) => this.#context.scheduled({ all }))
      .catch((error: unknown) => this.#context.log.warn({ err: error }, "could not read the fleet's schedules; they come with its log"));
    this.#announce();
    this.#clock.start();
    // a host that starts with newer schema files moves the fleet to them (a rolling upgrade)
    const { table, validators, schemaFiles, stopping, log } = this.#context;
    await moveFleet(member, {
      inForce: this.#context.schemas,
      files: schemaFiles,
      down: this.#downgrade,
      table,
      validators,
      host: this.#host,
      seq: own.seq,
      position: own.position,
      stopping,
      log,
    });
    return own;
  }

  async commitDue(records: Omit<FleetRecord, "revision">[]): Promise<boolean | undefined> {
    const member = this.#member;
    const after = this.#context.table.revision;
    const committed = await member.commit(after, records);
    if (committed === undefined) return undefined;
    await member.untilRevision(committed ? after + records.length : await member.head());
    return committed;
  }

  // every host must open the fleet's sealed values, and seal its own with the same key
  async #sameSecretsKey(): Promise<void> {
    const own = this.#context.sealing?.id;
    const fleet = await this.#log.secretsKey(own).catch(() => own); // etcd away: the records will tell
    if (fleet === own) return;
    throw new CdpError(
      "usage",
      own === undefined
        ? `the fleet seals its secret values with secrets key ${fleet}: give this host that key with --secrets-key FILE (or CDP_SECRETS_KEY_FILE)`
        : `this host's secrets key is key ${own}, but the fleet seals its secret values with key ${fleet}: every host needs the same key`,
    );
  }

  // Every host says how it is, for every host's /v1/hosts and the rollouts' clocks: every 2 s, and
  // within a quarter of a second when its readiness changes (a canary's clock aborts on it).
  #announce(): void {
    let pending = false; // one at a time: while etcd does not answer, announcements do not pile up
    let said = "";
    let sinceSaid = 0;
    const announce = () => {
      const status = this.#context.status();
      const readiness = `${status.ready} ${status.reason ?? ""}`;
      if (pending || (readiness === said && ++sinceSaid < 8)) return;
      [pending, said, sinceSaid] = [true, readiness, 0];
      this.#log
        .announce(status)
        .catch((error: unknown) => this.#context.log.debug({ err: error }, "could not say how this host is"))
        .finally(() => (pending = false));
    };
    announce();
    this.#announcing ??= setInterval(announce, 250).unref();
  }

  /** The batches in flight, unless the table has caught up with them. */
  #stillInFlight(): { revision: number; apps: PendingConfigs } | undefined {
    return this.#inFlight && this.#inFlight.revision > this.#context.table.revision ? this.#inFlight : undefined;
  }

  judgingAt(): { revision: number; configs: Configs } {
    const { table } = this.#context;
    const inFlight = this.#stillInFlight();
    return inFlight ? { revision: inFlight.revision, configs: inFlight.apps } : { revision: table.revision, configs: table };
  }

  async sent(judged: JudgedBatch, judgedAt: number): Promise<void> {
    const { table } = this.#context;
    // what this batch and those still travelling set, over the table
    const apps = this.#stillInFlight()?.apps ?? new PendingConfigs(table);
    for (const { change } of judged.changes) apps.set(change.app, change.path[0]!, change.topValue);
    this.#inFlight = { revision: judgedAt + judged.fleetRecords.length, apps };
    // a rollout's step changes what the next lines may do (its app is closed): judged once it is back
    if (judged.fleetRecords.some((record) => record.rollout)) await this.#member.untilRevision(this.#inFlight.revision);
  }

  landed(): Promise<void> {
    return this.#member.untilRevision(this.#inFlight?.revision ?? 0);
  }

  get knownRollouts(): FleetRollouts {
    return this.#clock.known;
  }

  rollouts(): Rollout[] {
    return this.#clock.known.list();
  }

  hosts(): Promise<HostStatus[]> {
    return this.#log.hosts();
  }

  release(): void {
    this.#member.release();
  }

  async stop(): Promise<void> {
    clearInterval(this.#announcing);
    this.#clock.stop();
    await this.#member.stop();
  }
}

/**
 * An append whose fsync the caller awaits later: the journal's turn is held until that fsync is
 * done, so that a compaction never swaps the file between the write and its sync.
 */
function unsyncedInTurn(
  turn: <T>(task: () => Promise<T>) => Promise<T>,
  append: () => Promise<(() => Promise<void>) | false>,
): Promise<(() => Promise<void>) | false> {
  return new Promise((resolve, reject) => {
    turn(async () => {
      const sync = await append();
      if (!sync) return resolve(false);
      await new Promise<void>((synced) => resolve(() => sync().finally(synced)));
    }).catch(reject);
  });
}

/** Cut the batch's rejections off again (a batch with none wrote nothing: no truncate and fsync then, on every lost race). */
async function dropRejectsAfter(rejects: DurableFile, length: number): Promise<void> {
  if (rejects.size !== length) await rejects.truncateDurably(length);
}

/** A fleet host: the rejections, then the fleet's log; the batch's changes come back through it. */
function fleetCommit(
  files: Files,
  writes: HeldWrites,
  fleet: { member: FleetMember; table: ConfigTable; journalTurn: <T>(task: () => Promise<T>) => Promise<T>; stopping: () => boolean },
  log: Logger,
): CommitPoint {
  const { member, table, journalTurn, stopping } = fleet;
  return {
    appliesItself: true,
    maxLines: member.maxRecordsPerCommit,
    maxBytes: member.maxLineBytesPerCommit,
    async commit({ rejectText, fleetRecords, changes, last }, judgedAt) {
      const rejectsBefore = files.rejects.size;
      // the changes in the order of their records (a rollout's step has none: its lines are judged by each host)
      let next = 0;
      const judged = fleetRecords.map((record) => (record.rollout || record.schedule ? undefined : changes[next++]?.change));
      let committed: boolean | undefined;
      try {
        committed = (await writes.append(files.rejects, rejectText)) && (await member.commit(judgedAt, fleetRecords, judged));
      } catch (error) {
        if (!member.tooLarge(error)) throw error;
        await dropRejectsAfter(files.rejects, rejectsBefore);
        return "smaller";
      }
      if (committed === undefined || committed === false) {
        if (committed === undefined || stopping()) {
          log.warn("stopping with the batch uncommitted: its lines are processed again at the next start");
          return "stopped";
        }
        await dropRejectsAfter(files.rejects, rejectsBefore); // another host committed first: judge again against the newer state
        await member.untilRevision(await member.headAfterRefusal());
        return stopping() ? "stopped" : "again";
      }
      // our changes come back through the fleet's log; the next batch need not wait for them (the
      // run judges it against the state they leave), but a position marker follows them in the journal
      const landed = member.untilRevision(judgedAt + fleetRecords.length);
      void landed.then(() => member.trimIfDue(judgedAt)).catch((error: unknown) => log.warn({ err: error }, "could not trim the fleet's log"));
      if (!last || last.accepted) return "committed";
      await landed;
      if (table.revision < judgedAt + fleetRecords.length) {
        log.warn("stopping before the committed batch came back from the fleet's log: this host takes it from there at the next start");
        return "stopped";
      }
      return (await journalTurn(() => writes.append(files.journal, positionRecord(last.commit)))) ? "committed" : "stopped";
    },
  };
}
