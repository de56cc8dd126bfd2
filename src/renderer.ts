// Rendering files for services that read files: at start every target is written, then each time
// its app changes (a burst renders once). A file is written, and the service reloaded, only when
// the text differs from what `dest` holds. When the service's checker refuses the staged file,
// `dest` is never touched; when the reload or the health probe fails after it, the last good file
// is put back. Either way, on a single host, the app's config is taken back through the pipeline
// to the last configuration the service accepted, journaled with the reason (a fleet host keeps
// its last good file: a local decision).
import type { Logger } from "pino";
import { currentText, discard, healthy, install, removeStaged, runCommand, stage } from "./deliver.js";
import { renderTarget } from "./render.js";
import { maskText, secretTexts, type Schemas } from "./schemas.js";
import type { ConfigTable } from "./table.js";
import type { RenderTarget } from "./targets.js";
import type { AppConfig } from "./values.js";

export interface RendererOptions {
  targets: readonly RenderTarget[];
  table: ConfigTable;
  /** The schemas in force: a command's words are shown with the app's secret values masked. */
  schemas: () => Schemas;
  /** Take the app back to `config` through the pipeline, with the reason; false when nothing changed. Absent in a fleet. */
  revert?: (app: string, config: AppConfig, reason: string, source: string) => Promise<boolean>;
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
}

export class Renderer {
  readonly #options: RendererOptions;
  readonly #states: TargetState[];
  readonly #dirty = new Set<string>();
  readonly #reverting = new Set<string>(); // apps whose next render follows a revert: never reverted again
  #running: Promise<void> | undefined;
  #unsubscribe: () => void = () => undefined;
  #closed = false;

  constructor(options: RendererOptions) {
    this.#options = options;
    this.#states = options.targets.map((target) => ({ target, dest: target.dest, failures: 0, lastTime: 0, lastOk: true }));
  }

  /** Render every target now (so a service can start from its file), then follow the table. */
  async start(): Promise<void> {
    for (const state of this.#states) {
      await removeStaged(state.target.dest); // left by a crash between staging and renaming
      await this.#deliver(state, { atStart: true, afterRevert: false });
    }
    // after the batch's changes are all applied: a burst renders once
    this.#unsubscribe = this.#options.table.subscribeAll((event) => this.#changed(event.app));
  }

  status(): RenderStatus[] {
    return this.#states.map(({ target: _target, good: _good, ...status }) => status);
  }

  /** Why a target's file is not the current configuration's, if one is not. */
  problem(): string | undefined {
    return this.#states.find((state) => state.problem)?.problem;
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#unsubscribe();
    await this.#running;
  }

  #changed(app: string): void {
    if (this.#closed || !this.#states.some(({ target }) => target.app === app)) return;
    this.#dirty.add(app);
    if (!this.#running) this.#running = new Promise<void>((resolve) => setImmediate(resolve)).then(() => this.#drain());
  }

  async #drain(): Promise<void> {
    try {
      while (this.#dirty.size > 0 && !this.#closed) {
        const apps = [...this.#dirty];
        this.#dirty.clear();
        // every target of an app taken back renders as a revert (never reverted again)
        const reverted = new Set(apps.filter((app) => this.#reverting.delete(app)));
        for (const state of this.#states) if (apps.includes(state.target.app)) await this.#deliver(state, { atStart: false, afterRevert: reverted.has(state.target.app) });
      }
    } catch (error) {
      this.#options.log.error({ err: error }, "rendering failed");
    } finally {
      this.#running = undefined;
      if (this.#dirty.size > 0 && !this.#closed) this.#changed([...this.#dirty][0]!);
    }
  }

  /** Render, stage, check, install, reload, probe: the target's file for its app's config now. */
  async #deliver(state: TargetState, { atStart, afterRevert }: { atStart: boolean; afterRevert: boolean }): Promise<void> {
    const { target } = state;
    const config = this.#options.table.config(target.app);
    let text: string;
    try {
      text = renderTarget(target, config);
    } catch (error) {
      return this.#failed(state, config, "render", (error as Error).message, { atStart, afterRevert, installed: false });
    }
    const before = await currentText(target.dest);
    if (text === before) return this.#succeeded(state, config, text); // nothing to write, nothing to reload
    let staged: string;
    try {
      staged = await stage(target, text);
    } catch (error) {
      return this.#failed(state, config, "write", (error as Error).message, { atStart, afterRevert, installed: false });
    }
    if (target.check) {
      const checked = await runCommand(target.check, { staged, dest: target.dest }, target.commandTimeoutMs);
      if (!checked.ok) {
        await discard(staged);
        return this.#failed(state, config, "check", checked.output, { atStart, afterRevert, installed: false });
      }
    }
    try {
      await install(staged, target.dest);
    } catch (error) {
      await discard(staged); // never left beside dest: it may hold a secret
      return this.#failed(state, config, "write", (error as Error).message, { atStart, afterRevert, installed: false });
    }
    // at start a service is reloaded only if it may run on an earlier file (one was there), and not probed
    if (atStart && before === undefined) return this.#succeeded(state, config, text);
    const reloaded = target.reload ? await runCommand(target.reload, { dest: target.dest }, target.commandTimeoutMs) : { ok: true, output: "" };
    if (!reloaded.ok) return this.#failed(state, config, "reload", reloaded.output, { atStart, afterRevert, installed: true });
    const probed = target.health && !atStart ? await healthy(target, target.healthTimeoutMs) : { ok: true, output: "" };
    if (!probed.ok) return this.#failed(state, config, "health", probed.output, { atStart, afterRevert, installed: true });
    this.#options.log.info({ dest: target.dest, app: target.app, revision: this.#options.table.revision }, "rendered");
    this.#succeeded(state, config, text);
  }

  #succeeded(state: TargetState, config: AppConfig, text: string): void {
    state.good = { config, text };
    state.lastTime = Date.now();
    state.lastOk = true;
    delete state.problem;
  }

  async #failed(state: TargetState, config: AppConfig, stage: string, words: string, how: { atStart: boolean; afterRevert: boolean; installed: boolean }): Promise<void> {
    const { target } = state;
    const { log, revert } = this.#options;
    state.failures++;
    state.lastTime = Date.now();
    state.lastOk = false;
    state.problem = `${target.dest}: the ${stage} failed`;
    // the command's words are what an operator needs, but never with a secret in them (a checker may print the staged file)
    const schema = this.#options.schemas().get(target.app);
    const secrets = schema ? [...secretTexts(schema, config), ...(state.good ? secretTexts(schema, state.good.config) : [])].sort((a, b) => b.length - a.length) : [];
    const reason = `${stage}: ${maskText(words, secrets)}`;
    const fields = { dest: target.dest, app: target.app, reason };
    if (how.afterRevert) return log.fatal(fields, "the service is not healthy with its last good configuration either: left as it is (no flapping); look at it");
    const good = state.good;
    if (how.atStart || !good) return log.error(fields, how.installed ? "the rendered file is in place, but the service did not take it well" : "the rendered file was not put in place");
    log.error(fields, "the service refused the change: taking it back");
    // the app goes back to what the service last accepted; its file follows at the next render
    if (revert && (await revert(target.app, good.config, reason, `render:${target.dest}`))) {
      this.#reverting.add(target.app);
      return;
    }
    if (how.installed) await this.#restore(state, good.text);
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
