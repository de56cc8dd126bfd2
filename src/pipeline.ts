// The wiring: inbox -> parse -> validate -> rejects + journal (durable) -> table (announce).
import { stat } from "node:fs/promises";
import { performance } from "node:perf_hooks";
import { join } from "node:path";
import { EventEmitter } from "eventemitter3";
import type { Logger } from "pino";
import { judgeBatch, type JudgedBatch, type LineOutcome } from "./batch.js";
import { fleetCommit, journalCommit, type CommitPoint, type Files } from "./commit.js";
import { Compactor } from "./compactor.js";
import { DurableFile, lockDataDir } from "./durable.js";
import type { FleetLog } from "./fleet.js";
import { HeldWrites } from "./held.js";
import { Inbox, INBOX_FILE, type InboxBatch, type InboxSettings } from "./inbox.js";
import { JOURNAL_FILE, openJournal, replayJournal, truncateJournalBefore, type JournalState } from "./journal.js";
import type { FleetMember } from "./member.js";
import { REJECTS_FILE, openRejects } from "./rejects.js";
import { compileSchemas, readSchemaTexts, type Schemas } from "./schemas.js";
import { ConfigTable } from "./table.js";
import { Turns } from "./turns.js";
import { LiveSchemas, watchSchemaDir } from "./upgrade.js";
import type { AppValidator } from "./validate.js";
import { Vetoes } from "./vetoes.js";
import { openDataDir } from "./datadir.js";

export interface PipelineOptions {
  dir: string;
  schemas: string;
  validators: Map<string, AppValidator[]>;
  inbox: InboxSettings;
  /** Compact the journal once it holds `after` change records (0: never), keeping the last `keep`. */
  compaction: { after: number; keep: number };
  /** How long after it is applied a change may be vetoed by a subscriber. */
  vetoWindowMs: number;
  /** Fleet mode: accepted changes are committed to this log (the commit point) and applied from it. */
  fleet?: { log: FleetLog; host: string };
  log: Logger;
}

export type { LineOutcome } from "./batch.js";

export interface PipelineEvents {
  /** A batch is durable and applied: how many lines went which way, and how long it took from reading. */
  batch: (summary: { accepted: number; rejected: number; seconds: number }) => void;
  /** Every line of that batch (built only while someone listens). */
  lines: (file: string, lines: LineOutcome[]) => void;
}

export interface Pipeline {
  table: ConfigTable;
  schemas: Schemas;
  validators: Map<string, AppValidator[]>;
  dir: string;
  journalPath: string;
  events: EventEmitter<PipelineEvents>;
  /** How many times the inbox became unavailable since start. */
  readonly outages: number;
  /** Fleet mode: how many keys keep a value the fleet has changed, because this host's schemas refuse the change. */
  readonly diverged: number;
  /** Why cdp cannot take changes right now (inbox unavailable, writes held, stopping), or undefined. */
  notReady(): string | undefined;
  /** Settles when the pipeline stops: after `stop()`, or with the fault that stopped it. */
  stopped: Promise<void>;
  /** Finish and flush the batch in hand, then stop watching. */
  stop(): Promise<void>;
}

/** Load schemas, replay the journal (refusing an invalid one), then follow the inbox. */
export async function startPipeline(options: PipelineOptions): Promise<Pipeline> {
  const { dir } = options;
  await openDataDir(dir, options.log);
  const unlock = await lockDataDir(dir, "start another watcher", (message) => options.log.warn(message));
  try {
    return await follow(options, unlock);
  } catch (error) {
    await unlock();
    throw error;
  }
}

async function follow(options: PipelineOptions, unlock: () => Promise<void>): Promise<Pipeline> {
  const { dir, log } = options;
  const journalPath = join(dir, JOURNAL_FILE);
  const schemaTexts = await readSchemaTexts(options.schemas);
  const schemas = compileSchemas(options.schemas, schemaTexts);
  const state = await replayAtStart(journalPath, schemas, options);
  // cdp.rej is opened once the fleet's changes are caught up: they may move the inbox position on
  const files: Files = { journal: await openJournal(journalPath, state), rejects: undefined as unknown as DurableFile };
  const table = new ConfigTable(state.apps, state.revision, log.child({ stage: "table" }));
  let inbox: Inbox | undefined;
  let member: FleetMember | undefined; // in a fleet (set up below, once the turns and stopOn exist)
  let commitPoint!: CommitPoint;
  let stopping = false;
  const writes = new HeldWrites(log, () => stopping);
  const live = new LiveSchemas(schemas, schemaTexts, { dir: options.schemas, journalPath, validators: options.validators, table, files, writes, seq: () => seq, log });
  let resumeAt = state.position;
  const resumeSince = state.positionTime;

  let seq = state.seq;
  const { maxLineBytes } = options.inbox;
  // One batch: judge every line against the state the lines before it leave, write the
  // rejections, then commit the journal (the commit point), then tell the table.
  const events = new EventEmitter<PipelineEvents>();
  const handleBatch = async (batch: InboxBatch): Promise<void> => {
    if (member && batch.lines.length > member.maxRecordsPerCommit) {
      // one etcd transaction holds a bounded number of changes: commit a long batch in parts
      for (let from = 0; from < batch.lines.length && !stopping; from += member.maxRecordsPerCommit) {
        await handleBatch({ ...batch, lines: batch.lines.slice(from, from + member.maxRecordsPerCommit) });
      }
      return;
    }
    const started = performance.now();
    const judgedAt = table.revision;
    const seqBefore = seq;
    const judged = judgeBatch(batch, {
      schemas: live.schemas,
      validators: options.validators,
      maxLineBytes,
      current: (app) => table.config(app),
      revision: judgedAt,
      seq,
      time: new Date().toISOString(),
      fleetHost: options.fleet?.host,
      details: events.listenerCount("lines") > 0,
      log,
    });
    seq = judged.seq;
    const details = judged.lines;
    if (!judged.last) {
      if (details) events.emit("lines", batch.file, details); // blank lines and comments only: nothing to commit
      return;
    }
    const committed = await commitPoint.commit(judged, judgedAt);
    if (committed === "again") {
      seq = seqBefore;
      return handleBatch(batch);
    }
    if (committed === "stopped") return;
    logOutcomes(batch, judged, log);
    const accepted = judged.changes.length;
    const rejected = judged.rejections.length;
    if (!commitPoint.appliesItself) {
      for (const { change, revision, source, time, by, reason } of judged.changes) {
        table.apply({ app: change.app, key: change.key, config: change.config, revision, source, time, ...(by === undefined ? {} : { by }), ...(reason === undefined ? {} : { reason }), veto: vetoes.tentative(change, revision) });
      }
    }
    events.emit("batch", { accepted, rejected, seconds: (performance.now() - started) / 1000 });
    if (details) events.emit("lines", batch.file, details);
    if (commitPoint.appliesItself) return; // in a fleet, changes are counted (and compacted) as they come back from its log
    compactor.counted(accepted);
    if (compactor.due) await compactor.compact();
  };

  // In a fleet, the member appends to the journal outside the batches' turns: every append and
  // compaction there take turns of their own, so that compaction never swaps the file under a write.
  const journalTurns = new Turns();
  const journalTurn = <T>(task: () => Promise<T>): Promise<T> => journalTurns.run(task);
  const compactor = new Compactor({ ...options.compaction, journalPath, files, schemas: () => live.schemas, validators: options.validators, table, log }, state.records);
  const vetoes = new Vetoes({
    windowMs: options.vetoWindowMs,
    table,
    schemas: () => live.schemas,
    validators: options.validators,
    seq: () => seq,
    journal: (text) => writes.append(files.journal, text),
    inTurn: (task) => inTurn(task),
    stopping: () => stopping,
    fault: (error) => stopOn(error),
    reverted: () => compactor.counted(1),
    log,
  });

  // Batches, schema upgrades and reverts take turns, one at a time.
  const turns = new Turns();
  const inTurn = (task: () => Promise<void>) => turns.run(task);
  let fault: unknown;
  const stopOn = (error: unknown) => {
    fault = error;
    member?.release();
    void inbox?.close();
  };

  let upgradeQueued = false;
  // In a fleet, a host's revisions are the fleet's: a live upgrade's own revision has no place
  // there, so new schemas are taken at a restart (a rolling upgrade).
  const closeSchemaWatch = options.fleet ? async () => undefined : watchSchemaDir(options.schemas, options.inbox.pollIntervalMs, log.child({ stage: "upgrade" }), () => {
    if (upgradeQueued || stopping) return;
    upgradeQueued = true;
    inTurn(async () => {
      upgradeQueued = false;
      await live.upgrade();
    }).catch(stopOn);
  });

  // Fleet mode: this host's changes are committed to the fleet's log and come back from it, with
  // every other host's, in fleet order (see member.ts).
  // loaded only in a fleet: etcd's client (gRPC, protobuf) costs a single host memory for nothing
  member =
    options.fleet &&
    new (await import("./member.js")).FleetMember({
      fleet: options.fleet.log,
      host: options.fleet.host,
      keep: options.compaction.keep,
      table,
      schemas,
      validators: options.validators,
      journalPath,
      journal: (text) => journalTurn(() => writes.append(files.journal, text)),
      applied: (count) => {
        compactor.counted(count);
        // not while this host diverges: it reads those revisions again when its schemas catch up
        if (compactor.due && member!.diverged.size === 0) {
          compactor.restart(); // counted again from the compacted journal's history
          void journalTurn(() => compactor.compact().catch(stopOn));
        }
      },
      seq: () => seq,
      stopping: () => stopping,
      held: (reason) => (writes.reason = reason),
      fault: stopOn,
      log: log.child({ stage: "fleet" }),
    });
  commitPoint = member ? fleetCommit(files, writes, { member, table, journalTurn, stopping: () => stopping }, log) : journalCommit(files, writes, log);
  // A fleet host catches up before it reads its inbox: its own changes may move the inbox on.
  // While etcd cannot be reached it serves its journal's configuration and keeps trying.
  const joined = async (first: boolean): Promise<boolean> => {
    if (!member) return true;
    if (!(first ? await member.join() : await member.joinLater())) return false;
    if (member.own && member.own.seq > seq) [seq, resumeAt] = [member.own.seq, member.own.position];
    return true;
  };
  const startReading = async () => {
    files.rejects = await openRejects(join(dir, REJECTS_FILE), seq);
    inbox = new Inbox({ ...options.inbox, dir, log: log.child({ stage: "inbox" }), resumeAt, resumeSince });
    await inbox.start();
    if (stopping) await inbox.close(); // stopped while it was opening
    await warnIfOthersCanWrite(dir, log);
    log.info({ dir, apps: [...live.schemas.keys()], revision: table.revision }, "cdp is watching");
  };
  const firstTry = await joined(true);
  if (firstTry) await startReading();

  const stopped = (async () => {
    try {
      if (!firstTry) {
        if (!(await joined(false)) || stopping) return;
        await startReading();
      }
      for await (const batch of inbox!.batches()) await inTurn(() => handleBatch(batch));
      await turns.settled();
      if (fault) throw fault;
    } finally {
      await member?.stop();
      await closeSchemaWatch();
      await inbox?.close();
      await closeAll([files.journal, files.rejects].filter(Boolean));
      await unlock();
    }
  })();
  stopped.catch((error: unknown) => log.fatal({ err: error }, "cdp stopped"));

  return {
    table,
    get schemas() {
      return live.schemas;
    },
    validators: options.validators,
    dir,
    journalPath,
    events,
    get outages() {
      return inbox?.outages ?? 0;
    },
    get diverged() {
      return member?.diverged.size ?? 0;
    },
    notReady: () => {
      if (stopping || fault) return "cdp is stopping";
      const divergence = member?.diverged.size ? `this host's schemas refuse fleet changes to ${[...member.diverged.keys()].join(", ")}` : undefined;
      return inbox?.unavailable ?? writes.reason ?? divergence;
    },
    stopped,
    async stop() {
      stopping = true;
      member?.release();
      await inbox?.close();
      await stopped;
    },
  };
}


/**
 * Whoever can write the inbox can change the configuration: say so when anyone can (a world-
 * writable cdp.new or data directory), or when a group can replace cdp's own files (a group-
 * writable data directory). A group-writable cdp.new is how operators are let in: no warning.
 */
async function warnIfOthersCanWrite(dir: string, log: Logger): Promise<void> {
  for (const [path, mask, who] of [[dir, 0o022, "group or others"], [join(dir, INBOX_FILE), 0o002, "anyone"]] as const) {
    const info = await stat(path).catch(() => undefined);
    if (info && (info.mode & mask) !== 0) {
      const mode = (info.mode & 0o777).toString(8);
      log.warn({ path, mode }, `${path} is writable by ${who} (mode ${mode}): whoever can write there can change the configuration`);
    }
  }
}

/** The journal, replayed and checked: where processing stands. A fleet host drops what its schemas refused before. */
async function replayAtStart(journalPath: string, schemas: Schemas, options: PipelineOptions): Promise<JournalState> {
  const { log, validators } = options;
  let state = await replayJournal(journalPath, schemas, { validators });
  if (options.fleet && state.divergedFrom) {
    // the schemas may take them now (a rolling upgrade reached this host): read them again from the fleet
    log.warn({ revision: state.divergedFrom.revision }, "this host refused fleet changes from this revision on: reading them again from the fleet's log under the current schemas");
    await truncateJournalBefore(journalPath, state.divergedFrom.line);
    state = await replayJournal(journalPath, schemas, { validators });
  }
  if (state.torn !== undefined) {
    log.warn({ kept: `${JOURNAL_FILE}.torn` }, "the journal's last record was cut short by a crash: cut off (a copy is kept) and its line is read again");
  }
  return state;
}

/** Each line's outcome, once durable (a failed write must not look accepted); a burst is summed up, its lines at debug level. */
function logOutcomes(batch: InboxBatch, judged: JudgedBatch, log: Logger): void {
  const burst = batch.lines.length > 100;
  if (!burst || log.isLevelEnabled("debug")) {
    const level = burst ? "debug" : "info";
    for (const { change, revision, source } of judged.changes) log[level]({ app: change.app, key: change.key, value: change.secret ? "[secret]" : change.value, revision, source }, "accepted");
    for (const fields of judged.rejections) log[burst ? "debug" : "warn"](fields, "rejected");
  }
  if (burst) {
    const revision = judged.changes.at(-1)?.revision;
    const fields = { accepted: judged.changes.length, rejected: judged.rejections.length, ...(revision === undefined ? {} : { revision }), lines: `${INBOX_FILE}:${batch.lines[0]!.number}-${batch.lines.at(-1)!.number}` };
    if (judged.rejections.length > 0) log.warn(fields, "batch applied, with rejections (see cdp.rej)");
    else log.info(fields, "batch applied");
  }
}

async function closeAll(files: DurableFile[]): Promise<void> {
  await Promise.allSettled(files.map((file) => file.close()));
}
