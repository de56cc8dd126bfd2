// Rendering files for services that read files: at start every target is written, then each time
// its app changes (a burst renders once). A file is written, and the service reloaded, only when
// the text differs from what `dest` holds. When the service's checker refuses the staged file,
// `dest` is never touched; when the reload or the health probe fails after it, the last good file
// is put back. Either way, on a single host, what the service refused is taken back through the
// pipeline, journaled with the reason (a fleet host keeps its last good file: a local decision).
// When several changes arrived together, each is tried in turn on top of the last good
// configuration: only those the service refuses are taken back.
import { createHash } from "node:crypto";
import { isDeepStrictEqual } from "node:util";
import type { Logger } from "pino";
import { currentText, discard, healthy, install, removeStaged, runCommand, stage } from "./deliver.js";
import { renderTarget } from "./render.js";
import { maskText, secretTexts, type Schemas } from "../schemas/schemas.js";
import type { ChangeEvent, ConfigTable } from "../store/table.js";
import type { RenderTarget } from "./targets.js";
import type { AppConfig } from "../lines/values.js";

/** A change a render target's service refused, taken back through the pipeline. */
export interface TakenBack {
  app: string;
  /** The top-level key taken back. */
  key: string;
  /** The revisions whose values of that key were taken back. */
  revisions: number[];
  /** The revision of the take-back. */
  at: number;
  reason: string;
}

/** What the service said of the configuration up to a revision (for `cdp push` and POST /v1/changes). */
export interface RenderVerdicts {
  /** Every change up to this revision has been rendered and judged by the services. */
  judgedThrough: number;
  /** The recent take-backs, oldest first. */
  takenBack: TakenBack[];
  /** Per target (dest): the revision whose config its service last took, and the file's sha256. */
  good: Record<string, { revision: number; sha256: string }>;
}

export interface RendererOptions {
  targets: readonly RenderTarget[];
  table: ConfigTable;
  /** The schemas in force: a command's words are shown with the app's secret values masked. */
  schemas: () => Schemas;
  /**
   * Take keys of the app back to their values in `config` through the pipeline, each with its
   * reason, unless the key has changed since `judged`; the revision after, or undefined when
   * nothing was taken back. Absent in a fleet.
   */
  revert?: (app: string, config: AppConfig, reasons: ReadonlyMap<string, string>, judged: AppConfig, source: string) => Promise<number | undefined>;
  /** The services' verdicts moved on (written for the commands that wait on them). */
  judged?: (verdicts: RenderVerdicts) => void;
  /** What the last run recorded of each target's last good file (cdp.rendered). */
  recorded?: RenderVerdicts["good"];
  /** The app's config at an earlier revision (read from the journal), if it can be known. */
  configAt?: (app: string, revision: number) => Promise<AppConfig | undefined>;
  log: Logger;
}

/** What /metrics and /readyz say of a target. */
export interface RenderStatus {
  dest: string;
  failures: number;
  /** When it was last rendered (ms since the epoch), and whether that went well. */
  lastTime: number;
  lastOk: boolean;
  /** What is wrong now, if anything: the target and the stage that failed (its words are in the log and history). */
  problem?: string;
}

interface TargetState extends RenderStatus {
  target: RenderTarget;
  /** The last configuration the service accepted, and the text it has. */
  good?: { config: AppConfig; text: string };
  /** While the service is unhealthy: the next look at it. */
  retry?: { timer: NodeJS.Timeout; delayMs: number };
}

/** One render and delivery; `before`: what dest held before it. */
type Attempt = { ok: true; text: string } | { ok: false; stage: string; words: string; installed: boolean; before: string | undefined };

/** How long to wait before looking again at an unhealthy service: doubling up to a minute. */
const RETRY_FIRST_MS = 1000;
const RETRY_MOST_MS = 60_000;
const KEPT_TAKEBACKS = 100; // cdp.rendered is rewritten after each burst: kept small

export class Renderer {
  readonly #options: RendererOptions;
  readonly #states: TargetState[];
  readonly #dirty = new Set<string>();
  readonly #reverting = new Set<string>(); // apps whose next render follows a revert: never reverted again
  // app → top-level key → the revisions that changed it since the app's files were last good
  readonly #changed = new Map<string, Map<string, number[]>>();
  readonly #verdicts: RenderVerdicts;
  readonly #waiting = new Set<() => void>();
  #running: Promise<void> | undefined; // the last task queued (#enqueue)
  #drainQueued = false;
  #unsubscribe: () => void = () => undefined;
  #closed = false;

  constructor(options: RendererOptions) {
    this.#options = options;
    this.#states = options.targets.map((target) => ({ target, dest: target.dest, failures: 0, lastTime: 0, lastOk: true }));
    this.#verdicts = { judgedThrough: options.table.revision, takenBack: [], good: { ...options.recorded } };
  }

  /** Render every target now (so a service can start from its file), then follow the table. */
  async start(): Promise<void> {
    for (const state of this.#states) {
      await removeStaged(state.target.dest); // left by a crash between staging and renaming
      await this.#deliver(state, { atStart: true, afterRevert: false });
    }
    this.#judged(this.#options.table.revision);
    // after the batch's changes are all applied: a burst renders once
    this.#unsubscribe = this.#options.table.subscribeAll((event) => this.#noted(event));
    for (const app of this.#reverting) this.#schedule(app); // taken back at start: their files follow
  }

  status(): RenderStatus[] {
    return this.#states.map(({ target: _target, good: _good, retry: _retry, ...status }) => status);
  }

  /** Why a target's file is not the current configuration's, if one is not. */
  problem(): string | undefined {
    return this.#states.find((state) => state.problem)?.problem;
  }

  /** Whether the app's config is written for a service (its changes wait for the service's verdict). */
  renders(app: string): boolean {
    return this.#states.some(({ target }) => target.app === app);
  }

  /** The verdicts once every change up to `revision` is judged, or as they are when `timeoutMs` passes. */
  async verdicts(revision: number, timeoutMs: number): Promise<RenderVerdicts> {
    if (this.#verdicts.judgedThrough < revision && !this.#closed) {
      await new Promise<void>((resolve) => {
        const check = () => {
          if (this.#verdicts.judgedThrough < revision && !this.#closed) return;
          clearTimeout(timer);
          this.#waiting.delete(check);
          resolve();
        };
        const timer = setTimeout(() => {
          this.#waiting.delete(check);
          resolve();
        }, timeoutMs);
        this.#waiting.add(check);
      });
    }
    return this.#verdicts;
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#unsubscribe();
    for (const state of this.#states) clearTimeout(state.retry?.timer);
    for (const check of [...this.#waiting]) check();
    await this.#running;
  }

  #noted(event: ChangeEvent): void {
    if (this.#closed || !this.renders(event.app)) return;
    const keys = this.#changed.get(event.app) ?? new Map<string, number[]>();
    this.#changed.set(event.app, keys);
    const top = event.key.split(".")[0]!;
    keys.set(top, [...(keys.get(top) ?? []), event.revision]);
    this.#schedule(event.app);
  }

  #schedule(app: string): void {
    this.#dirty.add(app);
    if (this.#drainQueued) return;
    this.#drainQueued = true;
    // after the batch's changes are all applied: a burst renders once
    this.#enqueue(async () => {
      await new Promise<void>((resolve) => setImmediate(resolve));
      this.#drainQueued = false;
      await this.#drain();
    });
  }

  /** Renders, take-backs and second looks run one at a time, in order. */
  #enqueue(task: () => Promise<void>): void {
    const run: Promise<void> = (this.#running ?? Promise.resolve())
      .then(task)
      .catch((error: unknown) => this.#options.log.error({ err: error }, "rendering failed"))
      .finally(() => {
        if (this.#running === run) this.#running = undefined;
      });
    this.#running = run;
  }

  async #drain(): Promise<void> {
    try {
      while (this.#dirty.size > 0 && !this.#closed) {
        const judging = this.#options.table.revision;
        const apps = [...this.#dirty];
        this.#dirty.clear();
        // every target of an app taken back renders as a revert (never reverted again)
        const reverted = new Set(apps.filter((app) => this.#reverting.delete(app)));
        for (const app of apps) {
          let allGood = true;
          for (const state of this.#states) {
            if (state.target.app !== app) continue;
            await this.#deliver(state, { atStart: false, afterRevert: reverted.has(app) });
            allGood &&= state.lastOk;
          }
          if (allGood) this.#changed.delete(app);
        }
        // a take-back made while judging is judged (rendered) in the next round
        if (this.#dirty.size === 0) this.#judged(judging);
      }
    } catch (error) {
      this.#options.log.error({ err: error }, "rendering failed");
      if (this.#dirty.size > 0 && !this.#closed) this.#schedule([...this.#dirty][0]!);
    }
  }

  #judged(revision: number): void {
    this.#verdicts.judgedThrough = Math.max(this.#verdicts.judgedThrough, revision);
    this.#options.judged?.(this.#verdicts);
    for (const check of [...this.#waiting]) check();
  }

  /** Render the target's file for its app's config now: put in place, or refused and taken back. */
  async #deliver(state: TargetState, { atStart, afterRevert }: { atStart: boolean; afterRevert: boolean }): Promise<void> {
    const { target } = state;
    const config = this.#options.table.config(target.app);
    const revision = this.#options.table.revision;
    const attempt = await this.#attempt(target, config, atStart);
    if (attempt.ok) return this.#succeeded(state, config, attempt.text, atStart, revision);
    const reason = this.#reasonOf(state, config, attempt);
    this.#failed(state, attempt.stage);
    const fields = { dest: target.dest, app: target.app, reason };
    const { log } = this.#options;
    if (afterRevert) {
      log.fatal(fields, "the service is not healthy with its last good configuration either: left as it is (no flapping); looking at it again with backoff");
      return this.#retryLater(state);
    }
    if (atStart) state.good = await this.#goodAtStart(target, attempt.before);
    const good = state.good;
    if (!good) {
      log.error(fields, attempt.installed ? "the rendered file is in place, but the service did not take it well" : "the rendered file was not put in place");
      return this.#retryLater(state);
    }
    await this.#takeBack(state, config, attempt, reason);
  }

  /** Render, stage, check, install, reload, probe one configuration. */
  async #attempt(target: RenderTarget, config: AppConfig, atStart: boolean): Promise<Attempt> {
    let text: string;
    try {
      text = renderTarget(target, config);
    } catch (error) {
      return { ok: false, stage: "render", words: (error as Error).message, installed: false, before: undefined };
    }
    const before = await currentText(target.dest);
    if (text === before) return { ok: true, text }; // nothing to write, nothing to reload
    let staged: string;
    try {
      staged = await stage(target, text);
    } catch (error) {
      return { ok: false, stage: "write", words: (error as Error).message, installed: false, before };
    }
    if (target.check) {
      const checked = await runCommand(target.check, { staged, dest: target.dest }, target.commandTimeoutMs);
      if (!checked.ok) {
        await discard(staged);
        return { ok: false, stage: "check", words: checked.output, installed: false, before };
      }
    }
    try {
      await install(staged, target.dest);
    } catch (error) {
      await discard(staged); // never left beside dest: it may hold a secret
      return { ok: false, stage: "write", words: (error as Error).message, installed: false, before };
    }
    // at start a service is reloaded only if it may run on an earlier file (one was there), and not probed
    if (atStart && before === undefined) return { ok: true, text };
    const reloaded = target.reload ? await runCommand(target.reload, { dest: target.dest }, target.commandTimeoutMs) : { ok: true, output: "" };
    if (!reloaded.ok) return { ok: false, stage: "reload", words: reloaded.output, installed: true, before };
    const probed = target.health && !atStart ? await healthy(target, target.healthTimeoutMs) : { ok: true, output: "" };
    if (!probed.ok) return { ok: false, stage: "health", words: probed.output, installed: true, before };
    this.#options.log.info({ dest: target.dest, app: target.app, revision: this.#options.table.revision }, "rendered");
    return { ok: true, text };
  }

  /**
   * The service refused the app's config: find the changes to blame — when several top-level keys
   * changed since the last good config, each is tried in turn on top of what the service accepted
   * — and take back only those, through the pipeline.
   */
  async #takeBack(state: TargetState, config: AppConfig, failed: Extract<Attempt, { ok: false }>, reason: string): Promise<void> {
    const { target } = state;
    const good = state.good!;
    const revisions = this.#changed.get(target.app) ?? new Map<string, number[]>();
    const keys = [...new Set([...Object.keys(good.config), ...Object.keys(config)])]
      .filter((key) => !isDeepStrictEqual(good.config[key], config[key]))
      .sort((a, b) => (revisions.get(a)?.at(-1) ?? 0) - (revisions.get(b)?.at(-1) ?? 0));
    const blamed = new Map<string, string>();
    let installed = failed.installed;
    if (keys.length === 1) blamed.set(keys[0]!, reason);
    else if (keys.length > 1) {
      this.#options.log.warn({ dest: target.dest, app: target.app, keys }, "the service refused several changes at once: trying each in turn");
      for (const key of keys) {
        const trial = { ...state.good!.config };
        if (config[key] === undefined) delete trial[key];
        else trial[key] = config[key];
        const attempt = await this.#attempt(target, trial, false);
        if (attempt.ok) {
          state.good = { config: trial, text: attempt.text };
          installed = false;
          continue;
        }
        blamed.set(key, this.#reasonOf(state, trial, attempt));
        installed = attempt.installed;
      }
    }
    const { log, revert } = this.#options;
    log.error({ dest: target.dest, app: target.app, keys: [...blamed.keys()], reason }, "the service refused the change: taking it back");
    const at = blamed.size > 0 && revert ? await revert(target.app, state.good!.config, blamed, config, `render:${target.dest}`) : undefined;
    if (at !== undefined) {
      for (const [key, why] of blamed) this.#tookBack({ app: target.app, key, revisions: revisions.get(key) ?? [], at, reason: why });
      this.#reverting.add(target.app); // its file follows at the next render
      return;
    }
    if (installed) await this.#restore(state, state.good!.text);
  }

  #tookBack(entry: TakenBack): void {
    this.#verdicts.takenBack.push(entry);
    if (this.#verdicts.takenBack.length > KEPT_TAKEBACKS) this.#verdicts.takenBack.shift();
  }

  /** The command's words, never with a secret value of the app in them (a checker may print the staged file). */
  #reasonOf(state: TargetState, config: AppConfig, failed: Extract<Attempt, { ok: false }>): string {
    const schema = this.#options.schemas().get(state.target.app);
    const secrets = schema
      ? [...secretTexts(schema, config), ...(state.good ? secretTexts(schema, state.good.config) : [])].sort((a, b) => b.length - a.length)
      : [];
    return `${failed.stage}: ${maskText(failed.words, secrets)}`;
  }

  /**
   * At start, the configuration the service last took, when cdp knows it: the last run recorded
   * the revision of the file that dest still holds (a crash while the service judged a change, or
   * a change made while cdp was stopped).
   */
  async #goodAtStart(target: RenderTarget, before: string | undefined): Promise<TargetState["good"]> {
    const recorded = this.#verdicts.good[target.dest];
    if (!recorded || before === undefined || sha256(before) !== recorded.sha256) return undefined;
    const config = await this.#options.configAt?.(target.app, recorded.revision).catch(() => undefined);
    if (!config) return undefined;
    this.#options.log.warn(
      { dest: target.dest, app: target.app, revision: recorded.revision },
      "the service refuses the config cdp starts with: taking back what it refuses, to the config of the file it has",
    );
    return { config, text: before };
  }

  #succeeded(state: TargetState, config: AppConfig, text: string, atStart: boolean, revision?: number): void {
    state.good = { config, text };
    if (revision !== undefined) this.#verdicts.good[state.target.dest] = { revision, sha256: sha256(text) };
    state.lastTime = Date.now();
    state.lastOk = true;
    if (state.problem && !atStart) this.#options.log.info({ dest: state.target.dest, app: state.target.app }, "the service takes its file again");
    delete state.problem;
    clearTimeout(state.retry?.timer);
    delete state.retry;
  }

  #failed(state: TargetState, stage: string): void {
    state.failures++;
    state.lastTime = Date.now();
    state.lastOk = false;
    state.problem = `${state.target.dest}: the ${stage} failed`;
  }

  /** An unhealthy service is looked at again, with backoff, until it takes its file: /readyz follows. */
  #retryLater(state: TargetState): void {
    if (this.#closed) return;
    const delayMs = Math.min(RETRY_MOST_MS, state.retry ? state.retry.delayMs * 2 : RETRY_FIRST_MS);
    clearTimeout(state.retry?.timer);
    const timer = setTimeout(() => {
      if (this.#closed || !state.problem) return;
      this.#enqueue(() => this.#lookAgain(state));
    }, delayMs);
    timer.unref();
    state.retry = { timer, delayMs };
  }

  async #lookAgain(state: TargetState): Promise<void> {
    if (this.#closed || !state.problem) return;
    const { target } = state;
    const config = this.#options.table.config(target.app);
    const text = (() => {
      try {
        return renderTarget(target, config);
      } catch {
        return undefined;
      }
    })();
    // the file is in place: only the service's health is in question
    if (text !== undefined && text === (await currentText(target.dest))) {
      const probed = target.health ? await healthy(target, target.healthTimeoutMs) : { ok: true, output: "" };
      if (probed.ok) return this.#succeeded(state, config, text, false, this.#options.table.revision);
      state.problem = `${target.dest}: the health failed`;
      return this.#retryLater(state);
    }
    const revision = this.#options.table.revision;
    const attempt = await this.#attempt(target, config, false);
    if (attempt.ok) return this.#succeeded(state, config, attempt.text, false, revision);
    this.#failed(state, attempt.stage);
    this.#retryLater(state);
  }

  // A fleet host (or a revert that changed nothing): the last good file goes back, and the service is reloaded.
  async #restore(state: TargetState, text: string): Promise<void> {
    const { target } = state;
    try {
      await install(await stage(target, text), target.dest);
      if (target.reload) await runCommand(target.reload, { dest: target.dest }, target.commandTimeoutMs);
      this.#options.log.warn({ dest: target.dest }, "put the last good file back");
    } catch (error) {
      this.#options.log.error({ dest: target.dest, err: error }, "could not put the last good file back");
    }
  }
}

const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");
