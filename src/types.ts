// The pipeline's shapes, as the library, the sidecar and the CLI see them (as c12 keeps its types).
import type { Logger } from "pino";
import type { JudgedBatch, LineOutcome } from "./pipeline/batch.js";
import type { CommitPoint } from "./pipeline/commit.js";
import type { Files } from "./store/durable.js";
import type { HeldWrites } from "./store/held.js";
import type { Configs } from "./lines/values.js";
import type { HostStatus } from "./fleet/hosts.js";
import type { FleetRecord } from "./fleet/log.js";
import type { InboxPosition, InboxSettings } from "./inbox/inbox.js";
import type { RenderStatus, RenderVerdicts } from "./render/renderer.js";
import type { FleetRollouts, Rollout, RolloutStep } from "./fleet/rollouts.js";
import type { Schemas } from "./schemas/schemas.js";
import type { WatcherInfo } from "./store/watcher.js";
import type { ConfigTable } from "./store/table.js";
import type { AppValidator } from "./schemas/validate.js";
import type { EventEmitter } from "eventemitter3";
import type { SecretsKey } from "./lines/sealed.js";
import type { Scheduled, ScheduleStep } from "./store/records.js";

export interface PipelineOptions {
  dir: string;
  schemas: string;
  validators: Map<string, AppValidator[]>;
  inbox: InboxSettings;
  /** Compact the journal once it holds `after` change records (0: never), keeping the last `keep`. */
  compaction: { after: number; keep: number };
  /** How long after it is applied a change may be vetoed by a subscriber. */
  vetoWindowMs: number;
  /** The schema version the embedding code expects per app: another is refused, at start and live. */
  expect: Readonly<Record<string, number>>;
  /** Render files: targets written for services that read files. */
  render: readonly string[];
  /** Fleet mode: accepted changes are committed to this log (the commit point) and applied from it. */
  fleet?: FleetSetup;
  /** What `cdp status` is told of this watcher (written to cdp.watcher while it follows the inbox). */
  watcher?: Omit<WatcherInfo, "pid" | "started">;
  /** The key secret values are sealed with wherever cdp writes them (none: they are written as they are). */
  sealing?: SecretsKey;
  log: Logger;
}

export type { LineOutcome } from "./pipeline/batch.js";

export interface PipelineEvents {
  /** A batch is durable and applied: how many lines went which way, and how long it took from reading. */
  batch: (summary: { accepted: number; rejected: number; seconds: number }) => void;
  /** Every line of that batch (built only while someone listens). */
  lines: (file: string, lines: LineOutcome[]) => void;
  /**
   * A fleet's rollout took a step (staged, widened, promoted, aborted), applied on this host: what
   * this host recorded when it changed nothing here (else its changes tell).
   */
  rollout: (step: RolloutStep, nothingHere: { revision: number; reason: string } | undefined) => void;
}

export interface Pipeline {
  table: ConfigTable;
  schemas: Schemas;
  validators: Map<string, AppValidator[]>;
  dir: string;
  journalPath: string;
  /** The key secret values are sealed with (lines pushed over HTTP are sealed before they reach the inbox). */
  sealing: SecretsKey | undefined;
  events: EventEmitter<PipelineEvents>;
  /** How many times the inbox became unavailable since start. */
  readonly outages: number;
  /** The render targets' state (none without --render). */
  readonly renders: RenderStatus[];
  /** Fleet mode: how many keys keep a value the fleet has changed, because this host's schemas refuse the change. */
  readonly diverged: number;
  /** The hosts and how they are: in a fleet every host that says so (on its lease in etcd); else this one. */
  hosts(): Promise<HostStatus[]>;
  /** This host's name: its --cluster-host in a fleet, else the machine's. */
  readonly host: string;
  /** The fleet's rollouts as this host knows them: those in progress and the recent ones, newest first. */
  rollouts(): Rollout[];
  /** The changes in time still due, soonest first. */
  schedules(): Scheduled[];
  /** Why cdp cannot take changes right now (inbox unavailable, writes held, stopping), or undefined. */
  notReady(): string | undefined;
  /** The services' verdicts once they cover `revision` (or when `timeoutMs` passes); undefined when the app is rendered for no service. */
  renderVerdicts(app: string, revision: number, timeoutMs: number): Promise<RenderVerdicts | undefined>;
  /** Settles when the pipeline stops: after `stop()`, or with the fault that stopped it. */
  stopped: Promise<void>;
  /** Finish and flush the batch in hand, then stop watching. */
  stop(): Promise<void>;
}

/**
 * Fleet mode (index.ts sets it up): this host's name, whether it may move the fleet's schemas
 * down, and how it opens its part of the pipeline (fleet/host.ts), given the run's context.
 */
export interface FleetSetup {
  host: string;
  downgrade?: boolean;
  open(context: HostContext): FleetPlug;
}

/** What a fleet host's part shares with the run: one context, not a bag of callbacks per object. */
export interface HostContext {
  dir: string;
  journalPath: string;
  table: ConfigTable;
  /** cdp.rej and the journal (the journal is replaced by compaction), and their held writes. */
  files: Files;
  writes: HeldWrites;
  /** Changes the journal keeps with their history when compacted (the fleet's log keeps as many). */
  keep: number;
  /** The key secret values are sealed with (the fleet's saved state holds them). */
  sealing: SecretsKey | undefined;
  /** A change in time the fleet made or ended (applied here from its log), or every one due (`all`, at join). */
  scheduled(step: ScheduleStep | { all: Scheduled[] }): void;
  validators: Map<string, AppValidator[]>;
  /** The schemas in force; the host's schema files; taking those a fleet migration moved to. */
  schemas(): Schemas;
  schemaFiles: Schemas;
  take(schemas: Schemas): void;
  /** How many inbox lines this host has processed. */
  seq(): number;
  stopping(): boolean;
  /** A fault that must stop cdp. */
  fault(error: unknown): void;
  /** Run a task in its turn with the batches. */
  inTurn(task: () => Promise<void>): Promise<void>;
  /** Changes applied from the fleet's log (compaction counts them, and compacts in `journalTurn` unless this host diverges). */
  applied(count: number, diverging: boolean, journalTurn: <T>(task: () => Promise<T>) => Promise<T>): void;
  /** A rollout's step was applied here (the pipeline's "rollout" event). */
  stepped(step: RolloutStep, nothingHere: { revision: number; reason: string } | undefined): void;
  /** Append records to cdp.rej (held until it is open). */
  reject(text: string): Promise<void>;
  /** What this host says of itself to the fleet. */
  status(): HostStatus;
  log: Logger;
}

/** A fleet host's part of the pipeline, behind its commit point (fleet/host.ts). */
export interface FleetPlug {
  readonly commitPoint: CommitPoint;
  /** app.key (or app) -> why this host keeps its last good value instead of the fleet's. */
  readonly diverged: ReadonlyMap<string, string>;
  /** The rollouts this host knows, for judging a rollout's request. */
  readonly knownRollouts: FleetRollouts;
  /**
   * Catch up with the fleet, then say how this host is, run the rollout clock and move the fleet to
   * newer schema files: the inbox position to resume at (this host's own last record may be later
   * than its journal's); false while etcd cannot be reached (`first`: tried once, else until it can).
   */
  join(first: boolean, at: { seq: number; position: InboxPosition | undefined }): Promise<false | { seq: number; position: InboxPosition | undefined }>;
  /** The revision and configs the next batch is judged against: this host's batches still in flight, or the table's. */
  judgingAt(): { revision: number; configs: Configs };
  /** A batch committed to the fleet's log: in flight until its records come back. */
  sent(judged: JudgedBatch, judgedAt: number): Promise<void>;
  /** Resolves once every batch in flight is back and applied here. */
  landed(): Promise<void>;
  /**
   * Commit records made here by no inbox line (a due schedule) after the revision the table is
   * at: true once committed and applied here; false when another host committed first (decide
   * again); undefined when cdp stops.
   */
  commitDue(records: Omit<FleetRecord, "revision">[]): Promise<boolean | undefined>;
  hosts(): Promise<HostStatus[]>;
  rollouts(): Rollout[];
  /** cdp stops: nobody waits for the log any longer. */
  release(): void;
  stop(): Promise<void>;
}
