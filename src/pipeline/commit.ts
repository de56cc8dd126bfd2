// The commit point of a batch, one interface with two implementations: a single host's journal
// here (cdp.rej, then the journal, each fsync'd), or a fleet's log on etcd (fleet/host.ts: cdp.rej,
// then a transaction that holds only if the fleet is still at the revision the batch was judged
// against; the records then come back through the log, and the member applies them, while the
// next batch is judged and committed).
import type { Logger } from "pino";
import type { JudgedBatch } from "./batch.js";
import type { Files } from "../store/durable.js";
import type { HeldWrites } from "../store/held.js";

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
