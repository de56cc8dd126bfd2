// Plain JSON values as the table holds them: read and replace by key path, freeze, describe.

/** An app's whole configuration: a JSON object. */
export type AppConfig = { readonly [key: string]: unknown };

const hasOwn = (object: object, key: string) => Object.hasOwn(object, key);

/** The value at `path` inside `config`, or undefined. Own properties only: `__proto__` is just a name. */
export function getIn(config: unknown, path: readonly string[]): unknown {
  let node = config;
  for (const segment of path) {
    if (node === null || typeof node !== "object" || !hasOwn(node, segment)) return undefined;
    node = (node as Record<string, unknown>)[segment];
  }
  return node;
}

/** A copy of `config` with `value` at `path`; untouched branches are shared, missing objects created. */
export function setIn(config: AppConfig, path: readonly string[], value: unknown): AppConfig {
  const [head, ...rest] = path;
  if (head === undefined) return value as AppConfig;
  const child = getIn(config, [head]);
  const next = rest.length === 0 ? value : setIn(isObject(child) ? child : {}, rest, value);
  const copy: Record<string, unknown> = { ...config };
  defineKey(copy, head, next);
  return copy;
}

/** A top-level key's value (`before`) with `value` at the path `below` it: the key's new value. */
export function withValueBelow(before: unknown, below: readonly string[], value: unknown): unknown {
  return below.length === 0 ? value : setIn(isObject(before) ? before : {}, below, value);
}

/** `config` with `value` at `path`, changed in place (objects on the way that are frozen are copied). */
export function setInPlace(config: AppConfig, path: readonly string[], value: unknown): AppConfig {
  let node = config as Record<string, unknown>;
  for (const [index, segment] of path.entries()) {
    let next = index === path.length - 1 ? value : getIn(node, [segment]);
    if (index < path.length - 1 && (!isObject(next) || Object.isFrozen(next))) next = isObject(next) ? { ...next } : {};
    defineKey(node, segment, next);
    node = next as Record<string, unknown>;
  }
  return config;
}

// Assignment to "__proto__" would set the prototype: that one key is defined instead (defining
// every key costs a burst measurably).
export function defineKey(object: Record<string, unknown>, key: string, value: unknown): void {
  if (key === "__proto__") Object.defineProperty(object, key, { value, enumerable: true, writable: true, configurable: true });
  else object[key] = value;
}

export function isObject(value: unknown): value is AppConfig {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/** Freeze a freshly decoded value and everything in it, so readers can share it safely. */
export function freezeDeep<T>(value: T): T {
  if (value !== null && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const key in value) freezeDeep(value[key]);
  }
  return value;
}

/** The JSON Schema type of a value ("integer" for whole numbers). */
export function jsonTypeOf(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (typeof value === "number") return Number.isInteger(value) ? "integer" : "number";
  return typeof value;
}

/** A short rendering of a value for a message an operator reads. */
export function describeValue(value: unknown, max = 60): string {
  const text = value === undefined ? "nothing" : (JSON.stringify(value) ?? String(value));
  return text.length > max ? `${text.slice(0, max)}…` : text;
}

/** Whether a JSON value nests deeper than `max` arrays and objects (checked without recursion). */
export function nestsDeeperThan(value: unknown, max: number): boolean {
  let level: unknown[] = [value];
  for (let depth = 0; level.length > 0; depth++) {
    const next: unknown[] = [];
    for (const node of level) {
      if (node !== null && typeof node === "object") for (const child of Object.values(node)) next.push(child);
    }
    if (next.length > 0 && depth + 1 > max) return true;
    level = next;
  }
  return false;
}

/** Where the apps' configs are read: a top-level value alone (what a change to one key needs), or an app's whole config. */
export interface Configs {
  /** The app's whole config ({} for an unknown app); frozen. */
  config(app: string): AppConfig;
  /** The value of one top-level key of the app's config, or undefined. */
  valueOf(app: string, key: string): unknown;
}

/**
 * The apps' configs as changes not yet durable leave them (a batch's accepted lines): only what
 * they set is held, so judging a batch holds memory in proportion to what it changes, not a copy
 * of the app's config per line.
 */
export class PendingConfigs implements Configs {
  #set = new Map<string, Map<string, unknown>>();
  #wholes = new Map<string, AppConfig>(); // whole configs asked for (the whole-config path), kept up to date
  #replaced = new Set<string>(); // apps whose whole config was replaced (a migration): `before` no longer counts
  constructor(readonly before: Configs) {}

  valueOf(app: string, key: string): unknown {
    const set = this.#set.get(app);
    if (set?.has(key)) return set.get(key);
    return this.#replaced.has(app) ? undefined : this.before.valueOf(app, key);
  }

  config(app: string): AppConfig {
    let whole = this.#wholes.get(app);
    if (whole === undefined) {
      const set = this.#set.get(app);
      whole = this.#replaced.has(app) ? {} : this.before.config(app);
      if (set) {
        const copy = { ...whole };
        for (const [key, value] of set) defineKey(copy, key, value);
        whole = Object.freeze(copy);
      }
      this.#wholes.set(app, whole);
    }
    return whole;
  }

  /** Replace an app's whole config (a frozen one). */
  replace(app: string, config: AppConfig): void {
    this.#replaced.add(app);
    this.#set.set(app, new Map(Object.entries(config)));
    this.#wholes.set(app, config);
  }

  /** Set one top-level key of an app's config (a frozen value). */
  set(app: string, key: string, value: unknown): void {
    let set = this.#set.get(app);
    if (!set) this.#set.set(app, (set = new Map()));
    set.set(key, value);
    const whole = this.#wholes.get(app);
    if (whole !== undefined) {
      const copy = { ...whole };
      defineKey(copy, key, value);
      this.#wholes.set(app, Object.freeze(copy));
    }
  }
}

/** The configs of a map of apps, read as Configs. */
export function configsOf(apps: ReadonlyMap<string, AppConfig>): Configs {
  return { config: (app) => apps.get(app) ?? {}, valueOf: (app, key) => getIn(apps.get(app), [key]) };
}
