// The commit point of a batch, one interface with two implementations: a single host's journal
// (cdp.rej, then the journal, each fsync'd), or a fleet's log on etcd (cdp.rej, then a
// transaction that holds only if the fleet is still at the revision the batch was judged
// against; the records then come back through the log, and the member applies them, while the
// next batch is judged and committed).
import type { Logger } from "pino";
import type { JudgedBatch } from "./batch.js";
import type { DurableFile, Files } from "../store/durable.js";
import type { HeldWrites } from "../store/held.js";
import { positionRecord } from "../store/journal.js";
import type { FleetMember, MemberOptions } from "../fleet/member.js";
import type { ConfigTable } from "../store/table.js";

/**
 * committed: durable; again: another host committed first (judge the batch again); smaller: too
 * large for one etcd request (judge and commit it in halves); stopped: cdp stops with it unwritten.
 */
export type Committed = "committed" | "again" | "smaller" | "stopped";

/** cdp's own files; the journal is replaced when it is compacted. */
export interface CommitPoint {
  /** Whether the commit point feeds the table itself (a fleet's log does, through the member). */
  readonly appliesItself: boolean;
  /** How many lines, and bytes of lines, one commit may hold: a larger batch is judged and committed in parts. */
  readonly maxLines: number;
  readonly maxBytes: number;
  commit(judged: JudgedBatch, judgedAt: number): Promise<Committed>;
}

/** A single host: the rejections, then the journal (the commit point). */
export function journalCommit(files: Files, writes: HeldWrites, log: Logger): CommitPoint {
  return {
    appliesItself: false,
    maxLines: Infinity,
    maxBytes: Infinity,
    async commit({ rejectText, journalText }) {
      if ((await writes.append(files.rejects, rejectText)) && (await writes.append(files.journal, journalText))) return "committed";
      log.warn("stopping with the batch unwritten: its lines are processed again at the next start");
      return "stopped";
    },
  };
}

export interface FleetCommitOptions extends Omit<MemberOptions, "journal" | "held" | "applied"> {
  files: Files;
  writes: HeldWrites;
  /** The member's journal appends take turns with compaction, which swaps the file. */
  journalTurn: <T>(task: () => Promise<T>) => Promise<T>;
  /** Changes applied (counted for compaction), and whether this host diverges from the fleet. */
  applied: (count: number, diverging: boolean) => void;
}

/**
 * A fleet host's member and commit point. etcd's client is loaded only in a fleet: it costs a
 * single host memory for nothing.
 */
export async function openFleetCommit(options: FleetCommitOptions): Promise<{ member: FleetMember; commitPoint: CommitPoint }> {
  const { files, writes, journalTurn, applied, log } = options;
  const member: FleetMember = new (await import("../fleet/member.js")).FleetMember({
    ...options,
    journal: (text) => unsyncedInTurn(journalTurn, () => writes.appendUnsynced(files.journal, text)),
    held: (reason) => (writes.reason = reason),
    applied: (count) => applied(count, member.diverged.size > 0),
    log: log.child({ stage: "fleet" }),
  });
  return { member, commitPoint: fleetCommit(files, writes, { member, table: options.table, journalTurn, stopping: options.stopping }, log) };
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
      const judged = fleetRecords.map((record) => (record.rollout ? undefined : changes[next++]?.change));
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
