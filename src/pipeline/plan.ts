// What taking new schemas would do, without doing it (`cdp plan`, POST /v1/plan): per app, the
// version from and to, and the keys added, removed, renamed (moved by a step) and whose
// effective value changes; or why the schemas would be refused.
import { isDeepStrictEqual } from "node:util";
import type { Migrated } from "../store/installed.js";
import { maskSecrets, maskText, SCHEMA_SUFFIX, secretTexts, type Schemas } from "../schemas/schemas.js";
import type { ConfigTable } from "../store/table.js";
import { planUpgrade } from "./upgrade.js";
import type { Upgrade } from "./versions.js";
import type { AppValidator } from "../schemas/validate.js";
import { describeValue, type AppConfig } from "../lines/values.js";
import type { Step } from "../schemas/migrations.js";

export interface AppPlan {
  app: string;
  from: number;
  to: number;
  added: Record<string, unknown>;
  removed: string[];
  /** old key → new key */
  renamed: Record<string, string>;
  changed: Record<string, { from: unknown; to: unknown }>;
}

export type SchemaPlan = { ok: true; apps: AppPlan[] } | { ok: false; reason: string };

/** The plan, from the configuration in force (`before`, under `inForce`) and the upgrade computed. */
export function describePlan(before: ReadonlyMap<string, AppConfig>, inForce: Schemas, upgrade: Upgrade): SchemaPlan {
  // a value is secret if either schema says so, and so is what a step made of it (moved, copied, put in a message)
  const secrets = secretsOnEitherSide(before, inForce, upgrade);
  if (!upgrade.ok) return { ok: false, reason: maskText(upgrade.reason, secrets) };
  const apps: AppPlan[] = [];
  for (const [app, schema] of upgrade.schemas) {
    const migration = upgrade.migrated.find((each) => each.app === app);
    const old = inForce.get(app);
    const from = migration?.from ?? old?.version ?? schema.version;
    const shown = (config: AppConfig | undefined): AppConfig => {
      if (!config) return {};
      const masked = [old, schema].reduce<unknown>((value, masking) => (masking ? maskSecrets(masking, [], value) : value), config);
      return hideSecrets(masked, secrets) as AppConfig;
    };
    const was = shown(before.get(app));
    const now = shown(upgrade.apps.get(app));
    const renamed = migration ? renamesOf(migration, schema.steps, old?.steps) : {};
    const plan: AppPlan = { app, from, to: schema.version, added: {}, removed: [], renamed: {}, changed: {} };
    for (const [oldKey, newKey] of Object.entries(renamed)) {
      if (!(oldKey in was) || !(newKey in now)) continue;
      plan.renamed[oldKey] = newKey;
      if (!isDeepStrictEqual(was[oldKey], now[newKey])) plan.changed[newKey] = { from: was[oldKey], to: now[newKey] };
    }
    const movedFrom = new Set(Object.keys(plan.renamed));
    const movedTo = new Set(Object.values(plan.renamed));
    for (const key of new Set([...Object.keys(was), ...Object.keys(now)])) {
      if (movedFrom.has(key) || movedTo.has(key)) continue;
      if (!(key in was)) plan.added[key] = now[key];
      else if (!(key in now)) plan.removed.push(key);
      else if (!isDeepStrictEqual(was[key], now[key])) plan.changed[key] = { from: was[key], to: now[key] };
    }
    apps.push(plan);
  }
  return { ok: true, apps };
}

/** The texts of every secret value, before and after, under the schemas in force and the new ones. */
function secretsOnEitherSide(before: ReadonlyMap<string, AppConfig>, inForce: Schemas, upgrade: Upgrade): string[] {
  const found = new Set<string>();
  const configs = [...before, ...(upgrade.ok ? upgrade.apps : [])];
  for (const [app, config] of configs) {
    for (const schema of [inForce.get(app), upgrade.ok ? upgrade.schemas.get(app) : undefined]) {
      if (schema) for (const text of secretTexts(schema, config)) found.add(text);
    }
  }
  return [...found].sort((a, b) => b.length - a.length);
}

/** `value` with every string that holds a secret, and every number that is one, shown as "[secret]". */
function hideSecrets(value: unknown, secrets: readonly string[]): unknown {
  if (secrets.length === 0) return value;
  if (typeof value === "string") return secrets.some((secret) => value.includes(secret)) ? "[secret]" : value;
  if (typeof value === "number" || typeof value === "boolean") return secrets.includes(String(value)) ? "[secret]" : value;
  if (Array.isArray(value)) return value.map((item) => hideSecrets(item, secrets));
  if (typeof value === "object" && value !== null) return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, hideSecrets(item, secrets)]));
  return value;
}

/**
 * The plan for a running cdp, for some schema files replaced (file name → schema): the other
 * apps keep the schemas in force. Judged against the live configuration and its validators.
 */
export async function planFiles(
  live: { schemas: Schemas; table: ConfigTable; journalPath: string; validators: ReadonlyMap<string, readonly AppValidator[]> },
  files: Record<string, unknown>,
): Promise<SchemaPlan> {
  const texts = new Map([...live.schemas].map(([app, schema]) => [`${app}${SCHEMA_SUFFIX}`, JSON.stringify(schema.source)]));
  for (const [name, schema] of Object.entries(files)) texts.set(name, typeof schema === "string" ? schema : JSON.stringify(schema));
  const upgrade = await planUpgrade("(request)", texts, live.journalPath, live.validators, live.schemas);
  const before = new Map([...live.schemas.keys()].map((app) => [app, live.table.config(app)]));
  return describePlan(before, live.schemas, upgrade);
}

/** Top-level keys moved by the steps taken, followed through each step: old key → new key. */
function renamesOf(migration: Migrated, fileSteps: ReadonlyMap<number, Step>, heldSteps: ReadonlyMap<number, Step> | undefined): Record<string, string> {
  const steps = new Map([...(heldSteps ?? []), ...fileSteps]);
  const up = migration.to > migration.from;
  const origin = new Map<string, string>(); // current key → the key it started as
  for (let at = migration.from; at !== migration.to; at += up ? 1 : -1) {
    const step = steps.get(up ? at + 1 : at);
    for (const operation of (up ? step?.up : step?.down) ?? []) {
      if (operation.op !== "move") continue;
      const [from, to] = [topKey(operation.from), topKey(operation.path)];
      if (from === undefined || to === undefined) continue;
      origin.set(to, origin.get(from) ?? from);
      origin.delete(from);
    }
  }
  return Object.fromEntries([...origin].map(([now, was]) => [was, now]));
}

function topKey(pointer: string): string | undefined {
  const match = /^\/([^/]+)$/.exec(pointer);
  return match ? match[1]!.replace(/~1/g, "/").replace(/~0/g, "~") : undefined;
}

/** The plan for a terminal: one block per app. */
export function formatPlan(plan: Extract<SchemaPlan, { ok: true }>): string {
  const lines: string[] = [];
  for (const app of plan.apps) {
    const moved = app.from === app.to ? `version ${app.to}` : `version ${app.from} → ${app.to}`;
    const rows = [
      ...Object.entries(app.renamed).map(([from, to]) => `  renamed  ${from} → ${to}`),
      ...Object.entries(app.added).map(([key, value]) => `  added    ${key}: ${describeValue(value)}`),
      ...app.removed.map((key) => `  removed  ${key}`),
      ...Object.entries(app.changed).map(([key, { from, to }]) => `  changed  ${key}: ${describeValue(from)} → ${describeValue(to)}`),
    ];
    lines.push(`${app.app}: ${moved}${rows.length === 0 ? ", no change" : ""}`, ...rows);
  }
  return lines.join("\n");
}
