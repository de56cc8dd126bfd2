// The running pipeline: its state in one place, and the steps that change it — batches judged
// and committed (the journal, or a fleet's log), schema upgrades, vetoes and reverts, compaction,
// render targets — taking turns until it stops. pipeline.ts starts it.
import { performance } from "node:perf_hooks";
import { join } from "node:path";
import { EventEmitter } from "eventemitter3";
import type { Logger } from "pino";
import type { SecretsKey } from "../lines/sealed.js";
import { judgeBatch, logOutcomes, partsOf, type JudgedBatch } from "./batch.js";
import { journalCommit, type CommitPoint } from "./commit.js";
import { Compactor } from "../store/compactor.js";
import type { DurableFile, Files } from "../store/durable.js";
import { HeldWrites } from "../store/held.js";
import { Inbox, type InboxBatch, type InboxPosition } from "../inbox/inbox.js";
import { replayJournal, type JournalState } from "../store/journal.js";
import { configsAt } from "../store/history.js";
import { REJECTS_FILE, openRejects } from "../store/rejects.js";
import type { Schemas, SchemaTexts } from "../schemas/schemas.js";
import { ConfigTable, type AppliedChange } from "../store/table.js";
import { Turns } from "./turns.js";
import { declaredVersion } from "../schemas/migrations.js";
import { LiveSchemas } from "./upgrade.js";
import type { AppValidator } from "../schemas/validate.js";
import { Vetoes } from "./vetoes.js";
import type { Renderer, RenderStatus, RenderVerdicts } from "../render/renderer.js";
import { writeRenderVerdicts } from "./receipts.js";
import type { RenderTarget } from "../render/targets.js";
import type { AppConfig } from "../lines/values.js";
import type { HostStatus } from "../fleet/hosts.js";
import { hostname } from "node:os";
import type { FleetPlug, FleetSetup, HostContext, Pipeline, PipelineEvents, PipelineOptions } from "../types.js";
import { announceWatcher } from "../store/watcher.js";
import { isRolloutDirective, type Rollout } from "../fleet/rollouts.js";
import { warnIfOthersCanWrite } from "../store/datadir.js";
import { fleetRecordsOf, type Fired } from "./schedule.js";
import { ScheduleClock } from "./schedule-clock.js";
import type { Scheduled } from "../store/records.js";

/** What start-up loaded (pipeline.ts): the schemas in force and as the files say, the journal's state, the render targets. */
export interface Loaded {
  journalPath: string;
  schemas: Schemas;
  files: Schemas;
  texts: SchemaTexts;
  state: JournalState;
  journal: DurableFile;
  /** Render targets and their loop, loaded only when there are any (the serializers and the template engine cost memory). */
  render?: { targets: RenderTarget[]; Renderer: typeof Renderer; recorded?: RenderVerdicts["good"] };
}

/** One run of the pipeline: its state, in one place, and the steps that change it. */
export class Run implements Pipeline {
  readonly #options: PipelineOptions;
  readonly #schemaFiles: Schemas; // as the files say; those in force are #live's
  readonly #log: Logger;
  readonly #unlock: () => Promise<void>;
  readonly dir: string;
  readonly validators: Map<string, AppValidator[]>;
  readonly journalPath: string;
  readonly table: ConfigTable;
  readonly events = new EventEmitter<PipelineEvents>();
  readonly #files: Files;
  readonly #writes: HeldWrites;
  readonly #live: LiveSchemas;
  readonly #compactor: Compactor;
  readonly sealing: SecretsKey | undefined;
  readonly #clock: ScheduleClock;
  readonly #vetoes: Vetoes;
  // batches, schema upgrades and reverts take turns
  readonly #turns = new Turns();
  #commitPoint!: CommitPoint;
  #renderer: Renderer | undefined;
  readonly #renderTargets: readonly RenderTarget[];
  #fleet: FleetPlug | undefined; // a fleet host's part, behind the commit point
  #inbox: Inbox | undefined;
  #closeSchemaWatch: () => Promise<void> = async () => undefined;
  #withdraw: () => Promise<void> = async () => undefined;
  #seq: number;
  #resumeAt: InboxPosition | undefined;
  readonly #resumeSince: number | undefined;
  #stopping = false;
  #fault: unknown;
  #stopped: Promise<void> = Promise.resolve();
  #rejectsLater = ""; // cdp.rej records due before cdp.rej is open
  readonly #shared: Pick<
    HostContext,
    "journalPath" | "table" | "files" | "writes" | "validators" | "schemas" | "seq" | "stopping" | "fault" | "inTurn" | "sealing" | "log"
  >;

  /** A run of what start-up loaded, its commit point opened (in a fleet, by the fleet host's part). */
  static async open(options: PipelineOptions, unlock: () => Promise<void>, loaded: Loaded): Promise<Run> {
    const run = new Run(options, unlock, loaded);
    await run.#openCommitPoint();
    return run;
  }

  private constructor(options: PipelineOptions, unlock: () => Promise<void>, loaded: Loaded) {
    const { state } = loaded;
    const log = options.log;
    this.#options = options;
    this.#schemaFiles = loaded.files;
    this.#log = log;
    this.#unlock = unlock;
    [this.dir, this.validators, this.journalPath, this.sealing] = [options.dir, options.validators, loaded.journalPath, options.sealing];
    this.table = new ConfigTable(state.apps, state.revision, log.child({ stage: "table" }));
    // events of apps that use versions say which shape their value has
    this.table.versionOf = (app) => {
      const schema = this.#live.schemas.get(app);
      return schema && declaredVersion(schema);
    };
    // cdp.rej is opened once the fleet's changes are caught up: they may move the inbox position on
    this.#files = { journal: loaded.journal, rejects: undefined as unknown as DurableFile };
    this.#seq = state.seq;
    this.#resumeAt = state.position;
    this.#resumeSince = state.positionTime;
    const stopping = () => this.#stopping || this.#fault !== undefined;
    this.#writes = new HeldWrites(log, stopping);
    // what the run's parts share, once: not a bag of the same callbacks per part
    const shared = (this.#shared = {
      journalPath: this.journalPath,
      table: this.table,
      files: this.#files,
      writes: this.#writes,
      validators: options.validators,
      schemas: () => this.#live.schemas,
      seq: () => this.#seq,
      stopping,
      fault: (error: unknown) => this.#stopOn(error),
      inTurn: (task: () => Promise<void>) => this.#turns.run(task),
      sealing: options.sealing,
      log,
    });
    this.#live = new LiveSchemas(loaded.schemas, loaded.texts, {
      ...shared,
      dir: options.schemas,
      expect: options.expect,
      tentative: (undo) => this.#vetoes.window(undo),
    });
    this.#compactor = new Compactor({ ...shared, ...options.compaction }, state.records);
    this.#clock = new ScheduleClock(state.schedules, { ...shared, commit: (entry, fired, time) => this.#commitFired(entry, fired, time) });
    this.#vetoes = new Vetoes({
      ...shared,
      windowMs: options.vetoWindowMs,
      journal: (text) => this.#writes.append(this.#files.journal, text),
      reverted: () => this.#compactor.counted(1),
    });
    // a fleet host keeps its last good file when its service refuses a change: its config is the fleet's
    const revert = options.fleet
      ? undefined
      : (app: string, config: AppConfig, reasons: ReadonlyMap<string, string>, judged: AppConfig, source: string) =>
          this.#turns.run(() => this.#vetoes.revertApp(app, config, reasons, judged, source));
    const judged = (verdicts: RenderVerdicts) => writeRenderVerdicts(this.dir, verdicts, log);
    this.#renderTargets = loaded.render?.targets ?? [];
    // the config a service last took, when it refuses the one cdp starts with: read back from the journal
    const configAt = async (app: string, revision: number) => {
      const state = await replayJournal(this.journalPath, this.#live.schemas, { history: true, validators: options.validators });
      return configsAt(state, this.#live.schemas, revision).get(app);
    };
    if (loaded.render) {
      const { targets, Renderer, recorded } = loaded.render;
      this.#renderer = new Renderer({
        targets,
        table: this.table,
        schemas: shared.schemas,
        ...(revert ? { revert } : {}),
        judged,
        ...(recorded ? { recorded } : {}),
        configAt,
        log: log.child({ stage: "render" }),
      });
    }
  }

  /** The commit point: the journal, or in a fleet the fleet's log, through the fleet host's part. */
  async #openCommitPoint(): Promise<void> {
    const { fleet } = this.#options;
    if (!fleet) {
      this.#commitPoint = journalCommit(this.#files, this.#writes, this.#log);
      return;
    }
    this.#fleet = fleet.open(this.#hostContext(fleet));
    this.#commitPoint = this.#fleet.commitPoint;
  }

  /** What a fleet host's part shares with this run. */
  #hostContext(fleet: FleetSetup): HostContext {
    return {
      ...this.#shared,
      dir: this.dir,
      keep: this.#options.compaction.keep,
      schemaFiles: this.#schemaFiles,
      take: (schemas) => (this.#live.schemas = schemas),
      applied: (count, diverging, journalTurn) => {
        this.#compactor.counted(count);
        // not while this host diverges: it reads those revisions again when its schemas catch up
        if (this.#compactor.due && !diverging) this.#compactor.compact(journalTurn);
      },
      stepped: (step, nothingHere) => this.events.emit("rollout", step, nothingHere),
      scheduled: (step) => {
        if ("all" in step) this.#clock.replace(step.all);
        else this.#clock.took(["made" in step ? step.made : { done: step.done.id }]);
      },
      reject: async (text) => {
        if (this.#files.rejects) await this.#writes.append(this.#files.rejects, text);
        else this.#rejectsLater += text;
      },
      status: () => this.#hostStatus(fleet.host),
      log: this.#log,
    };
  }

  /** Watch the schemas, catch up with the fleet (or keep trying in the background), follow the inbox. */
  async start(): Promise<void> {
    this.#watchSchemas();
    await this.#renderer?.start(); // before "cdp is watching": a service can start from its file
    const joined = await this.#joinFleet(true);
    if (joined) await this.#startReading();
    if (joined) this.#clock.start(); // what fell due while cdp was stopped fires now, once, in order
    this.#stopped = this.#follow(joined);
    this.#stopped.catch((error: unknown) => this.#log.fatal({ err: error }, "cdp stopped"));
  }

  // One turn per batch until the inbox closes; then everything is closed, in order.
  async #follow(joined: boolean): Promise<void> {
    try {
      if (!joined) {
        if (!(await this.#joinFleet(false)) || this.#stopping) return;
        await this.#startReading();
        this.#clock.start();
      }
      for await (const batch of this.#inbox!.batches()) await this.#turns.run(() => this.#handleBatch(batch));
      await this.#turns.settled();
      if (this.#fault) throw this.#fault;
    } finally {
      await this.#compactor.settled();
      await this.#fleet?.stop();
      await this.#renderer?.close();
      await this.#closeSchemaWatch();
      await this.#inbox?.close();
      await this.#withdraw().catch(() => undefined);
      await Promise.allSettled([this.#files.journal, this.#files.rejects].filter(Boolean).map((file) => file.close()));
      await this.#unlock();
    }
  }

  // In a fleet, a host's revisions are the fleet's: a live upgrade's own revision has no place
  // there, so new schemas are taken at a restart (a rolling upgrade).
  #watchSchemas(): void {
    if (this.#options.fleet) return;
    this.#closeSchemaWatch = this.#live.watch(this.#options.inbox.pollIntervalMs, this.#shared);
  }

  // A fleet host joins before it reads its inbox (its own changes may move the inbox on); while
  // etcd cannot be reached it serves its journal's configuration and keeps trying. A single host
  // has nothing to join: true at once.
  async #joinFleet(first: boolean): Promise<boolean> {
    if (!this.#fleet) return true;
    const joined = await this.#fleet.join(first, { seq: this.#seq, position: this.#resumeAt });
    if (!joined) return false;
    [this.#seq, this.#resumeAt] = [joined.seq, joined.position];
    return true;
  }

  async #startReading(): Promise<void> {
    const { dir, log } = this.#options;
    this.#files.rejects = await openRejects(join(dir, REJECTS_FILE), this.#seq);
    if (this.#rejectsLater !== "") await this.#writes.append(this.#files.rejects, this.#rejectsLater);
    this.#rejectsLater = "";
    this.#inbox = new Inbox({ ...this.#options.inbox, dir, log: log.child({ stage: "inbox" }), resumeAt: this.#resumeAt, resumeSince: this.#resumeSince });
    await this.#inbox.start();
    if (this.#stopping) await this.#inbox.close(); // stopped while it was opening
    await warnIfOthersCanWrite(dir, log);
    // said before "cdp is watching": whoever waits for that line finds cdp.watcher written
    const render = this.#renderApps.length > 0 ? { render: this.#renderApps } : {};
    this.#withdraw = await announceWatcher(dir, { pid: process.pid, started: new Date().toISOString(), ...this.#options.watcher, ...render }).catch(
      () => async () => undefined,
    );
    log.info({ dir, apps: [...this.#live.schemas.keys()], revision: this.table.revision }, "cdp is watching");
  }

  /**
   * One batch: judge every line against the state the lines before it leave, commit (the
   * rejections, then the journal or the fleet's log), then tell the table.
   */
  async #handleBatch(batch: InboxBatch, read = batch.lines.length): Promise<void> {
    const parts = partsOf(batch.lines, this.#commitPoint);
    if (parts.length > 1) {
      // one etcd transaction holds a bounded number of changes
      for (const lines of parts) if (!this.#stopping) await this.#handleBatch({ ...batch, lines }, read);
      return;
    }
    const started = performance.now();
    // a rollout's canaries are checked against the hosts as they say they are
    const fleet = this.#fleet;
    const hosts =
      fleet && batch.lines.some((line) => isRolloutDirective(line.text)) ? await fleet.hosts().catch((error: unknown) => (error as Error).message) : [];
    // in a fleet, against what this host's batches still in flight leave
    const { revision: judgedAt, configs } = fleet?.judgingAt() ?? { revision: this.table.revision, configs: this.table };
    const judged = judgeBatch(batch, {
      schemas: this.#live.schemas,
      validators: this.#options.validators,
      maxLineBytes: this.#options.inbox.maxLineBytes,
      configs,
      revision: judgedAt,
      seq: this.#seq,
      time: new Date().toISOString(),
      fleetHost: this.#options.fleet?.host,
      ...(fleet ? { rollouts: { known: fleet.knownRollouts, hosts } } : {}),
      details: this.events.listenerCount("lines") > 0,
      sealing: this.#options.sealing,
      schedules: this.#clock.due,
      log: this.#log,
    });
    if (!judged.last) {
      if (judged.lines) this.events.emit("lines", batch.file, judged.lines); // blank lines and comments only: nothing to commit
      return;
    }
    const seqBefore = this.#seq;
    this.#seq = judged.seq;
    const committed = await this.#commitPoint.commit(judged, judgedAt);
    if (committed === "again") {
      this.#seq = seqBefore; // another host was first: judged again against the newer state
      return await this.#handleBatch(batch, read);
    }
    if (committed === "smaller") {
      this.#seq = seqBefore; // its lines swelled past one etcd request once escaped: in halves
      const half = Math.ceil(batch.lines.length / 2);
      for (const lines of [batch.lines.slice(0, half), batch.lines.slice(half)]) if (!this.#stopping) await this.#handleBatch({ ...batch, lines }, read);
      return;
    }
    if (committed === "stopped") return;
    if (judged.schedules.length > 0) this.#clock.took(judged.schedules);
    await fleet?.sent(judged, judgedAt);
    await this.#finishBatch(batch, judged, started, read);
  }

  /**
   * A due schedule's changes, committed: to a fleet's log (every host's clock fires it; etcd's
   * compare-and-swap lets one host's decision through, and it comes back through the log), or to
   * this host's journal (after cdp.rej) and applied.
   */
  async #commitFired(entry: Scheduled, fired: Fired, time: string): Promise<boolean | undefined> {
    if (this.#fleet) {
      const committed = await this.#fleet.commitDue(fleetRecordsOf(entry, fired, this.#options.fleet!.host, this.#seq, time));
      if (committed && fired.rejectText) await this.#writes.append(this.#files.rejects, fired.rejectText);
      return committed;
    }
    const judged = { rejectText: fired.rejectText, journalText: fired.journalText } as JudgedBatch;
    if ((await this.#commitPoint.commit(judged, this.table.revision)) !== "committed") return undefined;
    const source = `schedule:${entry.id}`;
    for (const { change, revision, reason = entry.reason } of fired.changes) {
      const applied: AppliedChange = { app: change.app, key: change.key, topValue: change.topValue, revision, source, time };
      if (entry.by !== undefined) applied.by = entry.by;
      if (reason !== undefined) applied.reason = reason;
      this.table.apply(applied);
    }
    for (const revision of fired.markers) this.table.advance(revision);
    this.#compactor.counted(fired.changes.length);
    return true;
  }

  // Durable: log, apply to the table (a fleet's member does it as the records come back), announce, compact.
  async #finishBatch(batch: InboxBatch, judged: JudgedBatch, started: number, read: number): Promise<void> {
    if (!this.#commitPoint.appliesItself) {
      for (const { change, revision, source, time, by, reason } of judged.changes) {
        const applied: AppliedChange = { app: change.app, key: change.key, topValue: change.topValue, revision, source, time };
        if (by !== undefined) applied.by = by;
        if (reason !== undefined) applied.reason = reason;
        // a veto only for a change someone hears (a burst to no subscriber makes none)
        if (this.table.heard(change.app)) applied.veto = this.#vetoes.tentative(change, revision);
        this.table.apply(applied);
      }
    }
    // logged once the subscribers have the changes: a line of log before them cost each echo
    // ~16 µs of its ~70 µs of JS (timed stage by stage: inotify, read, judge, write, fsync, apply)
    logOutcomes(batch, judged, this.#log, read);
    const announce = () => {
      this.events.emit("batch", { accepted: judged.changes.length, rejected: judged.rejections.length, seconds: (performance.now() - started) / 1000 });
      if (judged.lines) this.events.emit("lines", batch.file, judged.lines);
    };
    if (this.#fleet) {
      // in a fleet, once the changes are back from its log and applied here (a sidecar's answer then reads them);
      // they are counted (and compacted) as they come back
      void this.#fleet.landed().then(announce);
      return;
    }
    announce();
    this.#compactor.counted(judged.changes.length);
    if (this.#compactor.due) this.#compactor.compact((task) => this.#turns.run(task)); // beside the pipeline
  }

  #stopOn(error: unknown): void {
    this.#fault = error;
    this.#fleet?.release();
    void this.#inbox?.close();
  }

  // What the library, the sidecar and the CLI see of this run (the Pipeline interface).
  get schemas(): Schemas {
    return this.#live.schemas;
  }
  get outages(): number {
    return this.#inbox?.outages ?? 0;
  }
  /** The apps whose config is rendered for a service (a change to them waits for its verdict). */
  get #renderApps(): string[] {
    return [...new Set(this.#renderTargets.map(({ app }) => app))];
  }

  /** The services' verdicts on the changes up to `revision` (undefined: the app is rendered for no service). */
  async renderVerdicts(app: string, revision: number, timeoutMs: number): Promise<RenderVerdicts | undefined> {
    if (!this.#renderer?.renders(app)) return undefined;
    return this.#renderer.verdicts(revision, timeoutMs);
  }

  get renders(): RenderStatus[] {
    return this.#renderer?.status() ?? [];
  }
  get diverged(): number {
    return this.#fleet?.diverged.size ?? 0;
  }
  get stopped(): Promise<void> {
    return this.#stopped;
  }

  /** The changes in time still due, soonest first. */
  schedules(): Scheduled[] {
    return this.#clock.list();
  }

  /** The fleet's rollouts as this host knows them, newest first (none for a single host). */
  rollouts(): Rollout[] {
    return this.#fleet?.rollouts() ?? [];
  }

  async hosts(): Promise<HostStatus[]> {
    return this.#fleet ? this.#fleet.hosts() : [this.#hostStatus(this.host)];
  }

  get host(): string {
    return this.#options.fleet?.host ?? hostname();
  }

  #hostStatus(host: string): HostStatus {
    const reason = this.notReady();
    const versions = Object.fromEntries([...this.#live.schemas].map(([app, schema]) => [app, schema.version]));
    return {
      host,
      revision: this.table.revision,
      ready: reason === undefined,
      ...(reason ? { reason } : {}),
      diverged: [...(this.#fleet?.diverged.keys() ?? [])],
      versions,
      time: new Date().toISOString(),
    };
  }

  notReady(): string | undefined {
    if (this.#stopping || this.#fault) return "cdp is stopping";
    const diverged = this.#fleet?.diverged;
    const divergence = diverged?.size ? `this host's schemas refuse fleet changes to ${[...diverged.keys()].join(", ")}` : undefined;
    return this.#inbox?.unavailable ?? this.#writes.reason ?? divergence ?? this.#renderer?.problem();
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    this.#clock.stop();
    this.#fleet?.release();
    await this.#inbox?.close();
    await this.#stopped;
  }
}
