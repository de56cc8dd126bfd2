// Stage 4: the live config table: synchronous reads, snapshots, revisions and subscribers.
// It knows nothing of files: any ordered source of changes (the journal today) feeds `apply`.
import { EventEmitter } from "eventemitter3";
import { isDeepStrictEqual } from "node:util";
import type { Logger } from "pino";
import { defineKey, freezeDeep, getIn, type AppConfig, type Configs } from "../lines/values.js";

/** What a subscriber hears: the change, after it is durable. */
export interface ChangeEvent {
  app: string;
  /** The subscribed key (or, for an app subscription, the changed key) as a dotted path. */
  key: string;
  value: unknown;
  previous: unknown;
  revision: number;
  /** Where the change came from, e.g. `cdp.new:12`. */
  source: string;
  time: string;
  /** Why the change was made (`# reason:` before its line, or cdp's own: the revert of a vetoed change). */
  reason?: string;
  /** Who made it (`# by:` before its line: the user of `cdp push`, the sidecar's token name). */
  by?: string;
  /** The app's schema version in force (the shape the value has), when its schema declares `x-cdp-version`. */
  version?: number;
  /**
   * Report the change unhealthy: within the tentative window, cdp reverts it through the
   * pipeline and records the reason. False when it can no longer be vetoed (it is permanent).
   */
  veto(reason: string): boolean;
}

/** A change the table applies: the new value of one top-level key of the app's config, at the next revision. */
/** The veto of a change that cannot be vetoed. */
const NO_VETO = () => false;

export interface AppliedChange {
  app: string;
  /** The changed key as a dotted path. */
  key: string;
  /** The new value of the key's first segment (the top-level key), defaults filled in. */
  topValue: unknown;
  revision: number;
  source: string;
  time: string;
  /** Why the change was made, and who made it. */
  reason?: string;
  by?: string;
  /** What a subscriber's veto does; without it, a change cannot be vetoed. */
  veto?: (reason: string) => boolean;
}

export type Subscriber = (event: ChangeEvent) => void | Promise<void>;

/** Reading and hearing the live configuration: what embedded cdp and the remote client share. */
export interface LiveConfig {
  /** The revision of the last applied change (0 before any). */
  readonly revision: number;
  /** An app's whole config, or the value at a dotted key path; undefined if there is none. */
  get(app: string, key?: string): unknown;
  /** Every app's config at one revision; immutable. */
  snapshot(): Snapshot;
  /**
   * Hear every change to an app, or to one key of it (a change above or below the key counts
   * when the key's value changes). Returns a function that unsubscribes. A subscriber that
   * throws is logged and does not stop others.
   */
  subscribe(app: string, subscriber: Subscriber): () => void;
  subscribe(app: string, key: string, subscriber: Subscriber): () => void;
}

/** An immutable view of every app's config at one revision. */
export interface Snapshot {
  readonly revision: number;
  readonly apps: { readonly [app: string]: AppConfig };
}

// Subscriptions are events named "app" (every key) or "app:key.path"; ':' never occurs in a name,
// nor '*' (every app).
const ALL = "*";
type Events = Record<string, (event: ChangeEvent) => void>;

const hasOwn = (object: object, key: string) => Object.hasOwn(object, key);
const EMPTY: AppConfig = Object.freeze({});

export class ConfigTable implements LiveConfig, Configs {
  // each app's config, changed in place key by key (its values are frozen): a change costs the same
  // whatever the config's size; a reader gets a frozen copy, made when first asked after a change
  #apps = new Map<string, Record<string, unknown>>();
  #wholes = new Map<string, AppConfig>();
  #revision: number;
  #snapshot: Snapshot | undefined;
  #emitter = new EventEmitter<Events>();
  #keyNames = new Set<string>(); // the "app:key" events someone listens to
  #log: Logger;
  #subscriberErrors = 0;
  /** The schema version in force per app (when it declares one), told to subscribers with each change. */
  versionOf: (app: string) => number | undefined = () => undefined;

  /** A config given unfrozen (a replay's) becomes the table's own: it is not copied (300,000 keys: 0.4 s). */
  constructor(apps: ReadonlyMap<string, AppConfig>, revision: number, log: Logger) {
    for (const [app, config] of apps) {
      if (Object.isFrozen(config)) {
        this.#apps.set(app, { ...config });
        this.#wholes.set(app, config);
        continue;
      }
      for (const key in config) freezeDeep(config[key]);
      this.#apps.set(app, config as Record<string, unknown>);
    }
    this.#revision = revision;
    this.#log = log;
  }

  /** The revision of the last applied change (0: none yet). */
  get revision(): number {
    return this.#revision;
  }

  /** The app's whole config, or the value at a dotted key; undefined if there is none. */
  get(app: string, key?: string): unknown {
    if (!this.#apps.has(app)) return undefined;
    if (key === undefined) return this.config(app);
    const [top, ...rest] = key.split(".");
    return getIn(this.valueOf(app, top!), rest);
  }

  /** The app's current config ({} for an unknown app). */
  config(app: string): AppConfig {
    let whole = this.#wholes.get(app);
    if (whole === undefined) {
      const entries = this.#apps.get(app);
      if (entries === undefined) return EMPTY;
      this.#wholes.set(app, (whole = Object.freeze({ ...entries })));
    }
    return whole;
  }

  /** The value of one top-level key of the app's config. */
  valueOf(app: string, key: string): unknown {
    const entries = this.#apps.get(app);
    return entries !== undefined && hasOwn(entries, key) ? entries[key] : undefined;
  }

  snapshot(): Snapshot {
    this.#snapshot ??= Object.freeze({
      revision: this.#revision,
      apps: Object.freeze(Object.fromEntries([...this.#apps.keys()].map((app) => [app, this.config(app)]))),
    });
    return this.#snapshot;
  }

  subscribe(app: string, subscriber: Subscriber): () => void;
  subscribe(app: string, key: string, subscriber: Subscriber): () => void;
  subscribe(app: string, keyOrSubscriber: string | Subscriber, maybeSubscriber?: Subscriber): () => void {
    const [key, subscriber] = typeof keyOrSubscriber === "function" ? [undefined, keyOrSubscriber] : [keyOrSubscriber, maybeSubscriber!];
    const name = key === undefined ? app : `${app}:${key}`;
    if (key !== undefined) this.#keyNames.add(name);
    const guarded = (event: ChangeEvent) => {
      try {
        const result = subscriber(event);
        if (result instanceof Promise) result.catch((error: unknown) => this.#subscriberFailed(event, error));
      } catch (error) {
        this.#subscriberFailed(event, error);
      }
    };
    this.#emitter.on(name, guarded);
    return () => {
      this.#emitter.off(name, guarded);
      if (this.#emitter.listenerCount(name) === 0) this.#keyNames.delete(name);
    };
  }

  /** Whether a change to `app` has anyone to hear it. */
  heard(app: string): boolean {
    if (this.#emitter.listenerCount(app) + this.#emitter.listenerCount(ALL) > 0) return true;
    for (const name of this.#keyNames) if (name.startsWith(app) && name[app.length] === ":") return true;
    return false;
  }

  /** Hear every change to every app (what the sidecar's event stream sends). */
  subscribeAll(subscriber: Subscriber): () => void {
    return this.subscribe(ALL, subscriber);
  }

  /** How many times a subscriber threw or rejected. */
  get subscriberErrors(): number {
    return this.#subscriberErrors;
  }

  /**
   * Apply a change that is already durable. Revisions never go back; a feed may skip some (a
   * remote client's filtered stream) and several changes may share one (a schema upgrade's keys).
   */
  apply(change: AppliedChange): void {
    if (change.revision < this.#revision) {
      throw new Error(`revision ${change.revision} applied after ${this.#revision}: changes must come in order`);
    }
    const dot = change.key.indexOf(".");
    const top = dot === -1 ? change.key : change.key.slice(0, dot);
    const before = this.valueOf(change.app, top);
    let entries = this.#apps.get(change.app);
    if (entries === undefined) this.#apps.set(change.app, (entries = {}));
    defineKey(entries, top, freezeDeep(change.topValue));
    this.#wholes.delete(change.app);
    this.#revision = change.revision;
    this.#snapshot = undefined;
    this.#announce(change, before);
  }

  /** Move to `revision` without a change (a fleet change this host refuses: its value stays). */
  advance(revision: number): void {
    if (revision < this.#revision) throw new Error(`revision ${revision} applied after ${this.#revision}: changes must come in order`);
    this.#revision = revision;
    this.#snapshot = undefined;
  }

  /**
   * Replace apps' whole configs at one revision (a schema upgrade that changed effective values,
   * a new default say): every key whose value changed is announced. Apps not given are dropped.
   */
  applyAll(
    apps: ReadonlyMap<string, AppConfig>,
    revision: number,
    source: string,
    time: string,
    said: { reason?: string; veto?: (reason: string) => boolean } = {},
  ): void {
    if (revision < this.#revision) throw new Error(`revision ${revision} applied after ${this.#revision}: changes must come in order`);
    const before = new Map([...this.#apps.keys()].map((app) => [app, this.config(app)]));
    this.#replace(apps);
    this.#revision = revision;
    this.#snapshot = undefined;
    for (const app of this.#apps.keys()) {
      const previous = before.get(app) ?? EMPTY;
      const config = this.config(app);
      for (const key of new Set([...Object.keys(previous), ...Object.keys(config)])) {
        if (!isDeepStrictEqual(previous[key], config[key])) this.#announce({ app, key, topValue: config[key], revision, source, time, ...said }, previous[key]);
      }
    }
  }

  #replace(apps: ReadonlyMap<string, AppConfig>): void {
    this.#apps = new Map([...apps].map(([app, config]) => [app, { ...freezeDeep(config) }]));
    this.#wholes = new Map([...apps].map(([app, config]) => [app, config]));
  }

  // `before`: the value of the change's top-level key before it
  #announce(change: AppliedChange, before: unknown): void {
    const { app, revision, source, time } = change;
    const veto = change.veto ?? NO_VETO;
    const event = (key: string): ChangeEvent => {
      const rest = key === change.key && !key.includes(".") ? [] : key.split(".").slice(1); // a related key is below the same top-level key
      const event: ChangeEvent = { app, key, value: getIn(change.topValue, rest), previous: getIn(before, rest), revision, source, time, veto };
      if (change.reason !== undefined) event.reason = change.reason;
      if (change.by !== undefined) event.by = change.by;
      const version = this.versionOf(app);
      if (version !== undefined) event.version = version;
      return event;
    };
    // nobody may listen (a sidecar host without subscribers): a burst then builds no events
    if (this.#emitter.listenerCount(app) + this.#emitter.listenerCount(ALL) > 0) {
      const changed = event(change.key);
      this.#emitter.emit(app, changed);
      this.#emitter.emit(ALL, changed);
    }
    for (const name of this.#keyNames) {
      if (!name.startsWith(app) || name[app.length] !== ":") continue;
      const key = name.slice(app.length + 1);
      if (key === change.key) {
        this.#emitter.emit(name, event(key));
      } else if (key.startsWith(`${change.key}.`) || change.key.startsWith(`${key}.`)) {
        const related = event(key);
        if (!isDeepStrictEqual(related.value, related.previous)) this.#emitter.emit(name, related);
      }
    }
  }

  #subscriberFailed(event: ChangeEvent, error: unknown): void {
    this.#subscriberErrors++;
    this.#log.error({ err: error, app: event.app, key: event.key, revision: event.revision }, "subscriber failed");
  }
}
