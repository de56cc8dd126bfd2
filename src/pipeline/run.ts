// The running pipeline: its state in one place, and the steps that change it — batches judged
// and committed (the journal, or a fleet's log), schema upgrades, vetoes and reverts, compaction,
// render targets — taking turns until it stops. pipeline.ts starts it.
import { performance } from "node:perf_hooks";
import { join } from "node:path";
import { EventEmitter } from "eventemitter3";
import type { Logger } from "pino";
import { judgeBatch, logOutcomes, partsOf, type JudgedBatch } from "./batch.js";
import { journalCommit, openFleetCommit, type CommitPoint } from "./commit.js";
import { Compactor } from "../store/compactor.js";
import type { DurableFile, Files } from "../store/durable.js";
import { HeldWrites } from "../store/held.js";
import { Inbox, type InboxBatch, type InboxPosition } from "../inbox/inbox.js";
import { replayJournal, type JournalState } from "../store/journal.js";
import { configsAt } from "../store/history.js";
import type { FleetMember } from "../fleet/member.js";
import { REJECTS_FILE, openRejects } from "../store/rejects.js";
import type { Schemas, SchemaTexts } from "../schemas/schemas.js";
import { ConfigTable, type AppliedChange } from "../store/table.js";
import { Turns } from "./turns.js";
import { declaredVersion } from "../schemas/migrations.js";
import { LiveSchemas } from "./upgrade.js";
import type { AppValidator } from "../schemas/validate.js";
import { moveFleet } from "../fleet/versions.js";
import { Vetoes } from "./vetoes.js";
import type { Renderer, RenderStatus, RenderVerdicts } from "../render/renderer.js";
import { writeRenderVerdicts } from "./receipts.js";
import type { RenderTarget } from "../render/targets.js";
import { PendingConfigs, type AppConfig } from "../lines/values.js";
import type { HostStatus } from "../fleet/hosts.js";
import { hostname } from "node:os";
import type { Pipeline, PipelineEvents, PipelineOptions } from "../types.js";
import { announceWatcher } from "../store/watcher.js";
import { isRolloutDirective, type Rollout } from "../fleet/rollouts.js";
import { RolloutClock } from "../fleet/rollout-clock.js";
import { warnIfOthersCanWrite } from "../store/datadir.js";

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

/** A fleet host's committed batches still travelling: the revision they end at, the configs they leave. */
type InFlight = { revision: number; apps: PendingConfigs };

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
  readonly #vetoes: Vetoes;
  // batches, schema upgrades and reverts take turns; in a fleet, the member's journal appends and
  // compaction take turns of their own, so that compaction never swaps the file under a write
  readonly #turns = new Turns();
  readonly #journalTurns = new Turns();
  #commitPoint!: CommitPoint;
  #renderer: Renderer | undefined;
  readonly #renderTargets: readonly RenderTarget[];
  #member: FleetMember | undefined;
  #inbox: Inbox | undefined;
  #closeSchemaWatch: () => Promise<void> = async () => undefined;
  #withdraw: () => Promise<void> = async () => undefined;
  #seq: number;
  #resumeAt: InboxPosition | undefined;
  readonly #resumeSince: number | undefined;
  #stopping = false;
  #fault: unknown;
  #stopped: Promise<void> = Promise.resolve();
  #announcing: NodeJS.Timeout | undefined;
  #rollouts: RolloutClock | undefined; // a fleet's
  #rejectsLater = ""; // cdp.rej records due before cdp.rej is open
  // In a fleet, this host's committed batches that have not come back through the log yet: the
  // revision they end at, and the configs of the apps they change. The next batch is judged
  // against that state (etcd's compare-and-swap on the head guarantees it) and committed while
  // they travel.
  #inFlight: InFlight | undefined;

  /** A run of what start-up loaded; its commit point opened (in a fleet, the member: etcd's client is loaded then). */
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
    [this.dir, this.validators, this.journalPath] = [options.dir, options.validators, loaded.journalPath];
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
    this.#writes = new HeldWrites(log, () => this.#stopping);
    const seq = () => this.#seq;
    this.#live = new LiveSchemas(loaded.schemas, loaded.texts, {
      dir: options.schemas,
      journalPath: this.journalPath,
      validators: options.validators,
      expect: options.expect,
      tentative: (undo) => this.#vetoes.window(undo),
      table: this.table,
      files: this.#files,
      writes: this.#writes,
      seq,
      log,
    });
    const schemas = () => this.#live.schemas;
    this.#compactor = new Compactor(
      {
        ...options.compaction,
        journalPath: this.journalPath,
        files: this.#files,
        schemas,
        validators: options.validators,
        table: this.table,
        stopping: () => this.#stopping || this.#fault !== undefined,
        fault: (error) => this.#stopOn(error),
        log,
      },
      state.records,
    );
    this.#vetoes = new Vetoes({
      windowMs: options.vetoWindowMs,
      table: this.table,
      schemas,
      validators: options.validators,
      seq,
      journal: (text) => this.#writes.append(this.#files.journal, text),
      inTurn: (task) => this.#turns.run(task),
      stopping: () => this.#stopping,
      fault: (error) => this.#stopOn(error),
      reverted: () => this.#compactor.counted(1),
      log,
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
        schemas,
        ...(revert ? { revert } : {}),
        judged,
        ...(recorded ? { recorded } : {}),
        configAt,
        log: log.child({ stage: "render" }),
      });
    }
  }

  /** The commit point: the journal, or in a fleet the fleet's log, through this host's member. */
  async #openCommitPoint(): Promise<void> {
    const { fleet, compaction, validators } = this.#options;
    if (!fleet) {
      this.#commitPoint = journalCommit(this.#files, this.#writes, this.#log);
      return;
    }
    const journalTurn = <T>(task: () => Promise<T>) => this.#journalTurns.run(task);
    const rollouts = this.#openRollouts(fleet);
    const opened = await openFleetCommit({
      fleet: fleet.log,
      host: fleet.host,
      keep: compaction.keep,
      table: this.table,
      schemas: () => this.#live.schemas,
      schemaFiles: this.#schemaFiles,
      took: (schemas) => (this.#live.schemas = schemas),
      validators,
      journalPath: this.journalPath,
      files: this.#files,
      writes: this.#writes,
      journalTurn,
      applied: (count, diverging) => {
        this.#compactor.counted(count);
        // not while this host diverges: it reads those revisions again when its schemas catch up
        if (this.#compactor.due && !diverging) this.#compactor.compact(journalTurn);
      },
      seq: () => this.#seq,
      stopping: () => this.#stopping,
      fault: (error) => this.#stopOn(error),
      rollouts: rollouts.known,
      rolloutStep: (step) => rollouts.stepApplied(step),
      vetoRollout: (id, reason) => rollouts.veto(id, reason),
      log: this.#log,
    });
    [this.#member, this.#commitPoint] = [opened.member, opened.commitPoint];
  }

  /** A fleet host's part in its rollouts: known, kept in cdp.rollouts, decided by its clock. */
  #openRollouts(fleet: NonNullable<PipelineOptions["fleet"]>): RolloutClock {
    this.#rollouts = new RolloutClock({
      dir: this.dir,
      host: fleet.host,
      fleet: fleet.log,
      member: () => this.#member!,
      table: this.table,
      schemas: () => this.#live.schemas,
      inTurn: (task) => this.#turns.run(task),
      seq: () => this.#seq,
      stopping: () => this.#stopping,
      stepped: (step, nothingHere) => this.events.emit("rollout", step, nothingHere),
      reject: async (text) => {
        if (this.#files.rejects) await this.#writes.append(this.#files.rejects, text);
        else this.#rejectsLater += text;
      },
      fault: (error) => this.#stopOn(error),
      log: this.#log,
    });
    return this.#rollouts;
  }

  /** Watch the schemas, catch up with the fleet (or keep trying in the background), follow the inbox. */
  async start(): Promise<void> {
    this.#watchSchemas();
    await this.#renderer?.start(); // before "cdp is watching": a service can start from its file
    const joined = await this.#joinFleet(true);
    if (joined) await this.#startReading();
    this.#stopped = this.#follow(joined);
    this.#stopped.catch((error: unknown) => this.#log.fatal({ err: error }, "cdp stopped"));
  }

  // One turn per batch until the inbox closes; then everything is closed, in order.
  async #follow(joined: boolean): Promise<void> {
    try {
      if (!joined) {
        if (!(await this.#joinFleet(false)) || this.#stopping) return;
        await this.#startReading();
      }
      for await (const batch of this.#inbox!.batches()) await this.#turns.run(() => this.#handleBatch(batch));
      await this.#turns.settled();
      if (this.#fault) throw this.#fault;
    } finally {
      await this.#compactor.settled();
      clearInterval(this.#announcing);
      this.#rollouts?.stop();
      await this.#renderer?.close();
      await this.#member?.stop();
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
    this.#closeSchemaWatch = this.#live.watch(this.#options.inbox.pollIntervalMs, {
      inTurn: (task) => this.#turns.run(task),
      stopping: () => this.#stopping,
      fault: (error) => this.#stopOn(error),
    });
  }

  // A fleet host joins before it reads its inbox: it catches up (its own changes may move the inbox
  // on), then says how it is (on a timer), starts its rollout clock and moves the fleet to newer
  // schema files. While etcd cannot be reached it serves its journal's configuration and keeps
  // trying. A single host has nothing to join: true at once.
  async #joinFleet(first: boolean): Promise<boolean> {
    const member = this.#member;
    if (!member) return true;
    if (!(first ? await member.join() : await member.joinLater())) return false;
    const { fleet, validators } = this.#options;
    if (member.own && member.own.seq > this.#seq) [this.#seq, this.#resumeAt] = [member.own.seq, member.own.position];
    // every host says how it is, for every host's /v1/hosts and the rollouts' clocks: every 2 s,
    // and within a quarter of a second when its readiness changes (a canary's clock aborts on it)
    let pending = false; // one at a time: while etcd does not answer, announcements do not pile up
    let said = "";
    let sinceSaid = 0;
    const announce = () => {
      const status = this.#hostStatus();
      const readiness = `${status.ready} ${status.reason ?? ""}`;
      if (pending || (readiness === said && ++sinceSaid < 8)) return;
      [pending, said, sinceSaid] = [true, readiness, 0];
      fleet!.log
        .announce(status)
        .catch((error: unknown) => this.#log.debug({ err: error }, "could not say how this host is"))
        .finally(() => (pending = false));
    };
    announce();
    this.#announcing ??= setInterval(announce, 250).unref();
    this.#rollouts?.start();
    // a host that starts with newer schema files moves the fleet to them (a rolling upgrade)
    await moveFleet(member, {
      inForce: () => this.#live.schemas,
      files: this.#schemaFiles,
      down: fleet!.downgrade === true,
      table: this.table,
      validators,
      host: fleet!.host,
      seq: this.#seq,
      position: this.#resumeAt,
      stopping: () => this.#stopping,
      log: this.#log,
    });
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
    const fleet = this.#options.fleet;
    const hosts =
      fleet && batch.lines.some((line) => isRolloutDirective(line.text)) ? await fleet.log.hosts().catch((error: unknown) => (error as Error).message) : [];
    const inFlight = this.#inFlight && this.#inFlight.revision > this.table.revision ? this.#inFlight : undefined;
    const judgedAt = inFlight?.revision ?? this.table.revision;
    const judged = judgeBatch(batch, {
      schemas: this.#live.schemas,
      validators: this.#options.validators,
      maxLineBytes: this.#options.inbox.maxLineBytes,
      configs: inFlight?.apps ?? this.table,
      revision: judgedAt,
      seq: this.#seq,
      time: new Date().toISOString(),
      fleetHost: fleet?.host,
      ...(this.#rollouts ? { rollouts: { known: this.#rollouts.known, hosts } } : {}),
      details: this.events.listenerCount("lines") > 0,
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
    if (this.#commitPoint.appliesItself) await this.#sentToFleet(judged, judgedAt, inFlight);
    await this.#finishBatch(batch, judged, started, read);
  }

  /** A fleet batch committed: the state it leaves is where the next batch is judged, until its records are back. */
  async #sentToFleet(judged: JudgedBatch, judgedAt: number, inFlight: InFlight | undefined): Promise<void> {
    // what this batch and those still travelling set, over the table
    const apps = inFlight?.apps ?? new PendingConfigs(this.table);
    for (const { change } of judged.changes) apps.set(change.app, change.path[0]!, change.topValue);
    this.#inFlight = { revision: judgedAt + judged.fleetRecords.length, apps };
    // a rollout's step changes what the next lines may do (its app is closed): judged once it is back
    if (judged.fleetRecords.some((record) => record.rollout)) await this.#member!.untilRevision(this.#inFlight.revision);
  }

  // Durable: log, apply to the table (a fleet's member does it as the records come back), announce, compact.
  async #finishBatch(batch: InboxBatch, judged: JudgedBatch, started: number, read: number): Promise<void> {
    logOutcomes(batch, judged, this.#log, read);
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
    const announce = () => {
      this.events.emit("batch", { accepted: judged.changes.length, rejected: judged.rejections.length, seconds: (performance.now() - started) / 1000 });
      if (judged.lines) this.events.emit("lines", batch.file, judged.lines);
    };
    if (this.#commitPoint.appliesItself) {
      // in a fleet, once the changes are back from its log and applied here (a sidecar's answer then reads them);
      // they are counted (and compacted) as they come back
      void this.#member!.untilRevision(this.#inFlight!.revision).then(announce);
      return;
    }
    announce();
    this.#compactor.counted(judged.changes.length);
    if (this.#compactor.due) this.#compactor.compact((task) => this.#turns.run(task)); // beside the pipeline
  }

  #stopOn(error: unknown): void {
    this.#fault = error;
    this.#member?.release();
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
    return this.#member?.diverged.size ?? 0;
  }
  get stopped(): Promise<void> {
    return this.#stopped;
  }

  /** The fleet's rollouts as this host knows them, newest first (none for a single host). */
  rollouts(): Rollout[] {
    return this.#rollouts?.known.list() ?? [];
  }

  async hosts(): Promise<HostStatus[]> {
    return this.#options.fleet ? this.#options.fleet.log.hosts() : [this.#hostStatus()];
  }

  get host(): string {
    return this.#options.fleet?.host ?? hostname();
  }

  #hostStatus(): HostStatus {
    const reason = this.notReady();
    const versions = Object.fromEntries([...this.#live.schemas].map(([app, schema]) => [app, schema.version]));
    const host = this.host;
    return {
      host,
      revision: this.table.revision,
      ready: reason === undefined,
      ...(reason ? { reason } : {}),
      diverged: [...(this.#member?.diverged.keys() ?? [])],
      versions,
      time: new Date().toISOString(),
    };
  }

  notReady(): string | undefined {
    if (this.#stopping || this.#fault) return "cdp is stopping";
    const diverged = this.#member?.diverged;
    const divergence = diverged?.size ? `this host's schemas refuse fleet changes to ${[...diverged.keys()].join(", ")}` : undefined;
    return this.#inbox?.unavailable ?? this.#writes.reason ?? divergence ?? this.#renderer?.problem();
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    this.#member?.release();
    await this.#inbox?.close();
    await this.#stopped;
  }
}
