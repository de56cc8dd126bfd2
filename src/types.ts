// The pipeline's shapes, as the library, the sidecar and the CLI see them (as c12 keeps its types).
import type { Logger } from "pino";
import type { LineOutcome } from "./pipeline/batch.js";
import type { HostStatus } from "./fleet/hosts.js";
import type { FleetLog } from "./fleet/log.js";
import type { InboxSettings } from "./inbox/inbox.js";
import type { RenderStatus, RenderVerdicts } from "./render/renderer.js";
import type { Rollout, RolloutStep } from "./fleet/rollouts.js";
import type { Schemas } from "./schemas/schemas.js";
import type { WatcherInfo } from "./store/watcher.js";
import type { ConfigTable } from "./store/table.js";
import type { AppValidator } from "./schemas/validate.js";
import type { EventEmitter } from "eventemitter3";

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
  fleet?: { log: FleetLog; host: string; downgrade?: boolean };
  /** What `cdp status` is told of this watcher (written to cdp.watcher while it follows the inbox). */
  watcher?: Omit<WatcherInfo, "pid" | "started">;
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
  /** Why cdp cannot take changes right now (inbox unavailable, writes held, stopping), or undefined. */
  notReady(): string | undefined;
  /** The services' verdicts once they cover `revision` (or when `timeoutMs` passes); undefined when the app is rendered for no service. */
  renderVerdicts(app: string, revision: number, timeoutMs: number): Promise<RenderVerdicts | undefined>;
  /** Settles when the pipeline stops: after `stop()`, or with the fault that stopped it. */
  stopped: Promise<void>;
  /** Finish and flush the batch in hand, then stop watching. */
  stop(): Promise<void>;
}
