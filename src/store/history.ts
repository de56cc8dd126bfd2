// Change management: the journal's history as operators read it, and rollback as ordinary lines.
import { isDeepStrictEqual } from "node:util";
import { CdpError } from "../errors.js";
import { maskLine } from "../schemas/sealing.js";
import { scheduledBy } from "./records.js";
import { encodeChange, type HistoryEntry, type JournalState } from "./journal.js";
import { migrateConfig, movesBetween } from "../schemas/migrations.js";
import { judgeInSequence } from "../schemas/validate.js";
import type { KeyInfo, Schemas } from "../schemas/schemas.js";
import type { AppValidator } from "../schemas/validate.js";
import { describeValue, getIn, setIn, type AppConfig } from "../lines/values.js";

/** The entries for `app` or `app.key` (a change above or below the key counts), newest first. */
export function selectHistory(history: readonly HistoryEntry[], selector: string | undefined, limit = Infinity): HistoryEntry[] {
  const [app, ...path] = selector?.split(".") ?? [];
  const key = path.join(".");
  const related = (entry: HistoryEntry) =>
    (app === undefined || entry.app === app) &&
    (key === "" ||
      entry.migration !== undefined ||
      entry.step !== undefined ||
      entry.key === key ||
      entry.key.startsWith(`${key}.`) ||
      key.startsWith(`${entry.key}.`));
  const selected: HistoryEntry[] = [];
  for (let i = history.length - 1; i >= 0 && selected.length < limit; i--) if (related(history[i]!)) selected.push(history[i]!);
  return selected;
}

const shown = (entry: HistoryEntry, value: unknown) => (entry.secret ? "[secret]" : value === undefined ? "(none)" : describeValue(value));

/** History as an aligned table for a terminal. */
export function formatHistory(entries: readonly HistoryEntry[]): string {
  const rows = entries.map((entry) => [
    String(entry.revision),
    entry.time ?? "(bootstrap)",
    entry.source,
    entry.key === "" ? entry.app : `${entry.app}.${entry.key}`,
    `${whatChanged(entry)}${entry.by ? `  by ${entry.by}` : ""}${entry.reason ? `  (${entry.reason})` : ""}`,
  ]);
  const header = ["rev", "time", "source", "key", "change"];
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => row[column]!.length)));
  return [header, ...rows].map((row) => row.map((cell, column) => (column === 4 ? cell : cell.padEnd(widths[column]!))).join("  ")).join("\n");
}

function whatChanged(entry: HistoryEntry): string {
  if (entry.migration) return `schema version ${entry.migration.from} → ${entry.migration.to}`;
  if (entry.step) return `rollout ${entry.step.rollout} ${entry.step.step}, nothing changed here`;
  if (entry.key === "") return entry.reason ?? "nothing changed here";
  return `${shown(entry, entry.previous)} → ${shown(entry, entry.value)}`;
}

/** History for scripts: secret values are never shown. */
export function historyJson(entries: readonly HistoryEntry[]): object[] {
  return entries.map(({ secret, record: _record, ...entry }) => {
    const id = scheduledBy(entry.source);
    const scheduled = id === undefined || entry.key === "" ? {} : { scheduled: id };
    return secret ? { ...entry, ...scheduled, value: "[secret]", previous: "[secret]" } : { ...entry, ...scheduled };
  });
}

/**
 * The change lines that bring the configuration back to its state at `revision`: the changes
 * after it are undone, newest first; a key that did not exist then goes back to its schema default.
 * One line per top-level key that differs, with the key's whole value.
 */
export function rollbackLines(state: JournalState, schemas: Schemas, revision: number): string[] {
  const target = configsAt(state, schemas, revision);
  const lines: string[] = [];
  for (const [app, config] of target) {
    const current: AppConfig = state.apps.get(app) ?? {};
    for (const key of new Set([...Object.keys(current), ...Object.keys(config)])) {
      const value = withoutUndefined(config[key]);
      if (isDeepStrictEqual(value, current[key])) continue;
      if (value === undefined) {
        throw new CdpError("refused", `${app}.${key} did not exist at revision ${revision} and has no default: a change line cannot remove it`);
      }
      lines.push(encodeChange(app, key, value, schemas.get(app)!.key([key]) as KeyInfo));
    }
  }
  return lines;
}

/** Every app's config as it was at `revision`, in today's shape (a replay with history). */
export function configsAt(state: JournalState, schemas: Schemas, revision: number): Map<string, AppConfig> {
  if (revision < 0 && state.revision === 0) throw new CdpError("usage", "nothing to undo: no change has been applied yet");
  if (revision < 0 || revision > state.revision) throw new CdpError("usage", `there is no revision ${revision} (the latest is ${state.revision})`);
  if (revision < state.historyFrom)
    throw new CdpError("refused", `the history before revision ${state.historyFrom} was compacted away: cdp cannot go back that far`);
  const target = new Map(state.apps);
  const shapes = new Map<string, number>(); // apps taken back across a migration: the version their target is in
  for (const entry of state.history.slice().reverse()) {
    if (entry.revision <= revision) break;
    if (entry.step) continue; // a rollout's step that changed nothing here
    if (entry.migration) {
      const { from, to } = entry.migration;
      target.set(
        entry.app,
        moveShape(state, schemas, entry.app, target.get(entry.app)!, to, from, `the migration of ${entry.app} (${from} → ${to}) at revision ${entry.revision}`),
      );
      shapes.set(entry.app, from);
      continue;
    }
    const path = entry.key.split(".");
    const previous = entry.previous === undefined ? getIn(schemas.get(entry.app)?.defaults, path) : entry.previous;
    target.set(entry.app, setIn(target.get(entry.app) ?? {}, path, previous));
  }
  // the state then, in today's shape
  for (const [app, version] of shapes)
    target.set(app, moveShape(state, schemas, app, target.get(app)!, version, schemas.get(app)!.version, `${app}'s migrations since revision ${revision}`));
  return target;
}

/** A config moved between versions with the steps recorded and in the file; refused with the reason when it cannot be. */
function moveShape(state: JournalState, schemas: Schemas, app: string, config: AppConfig, from: number, to: number, what: string): AppConfig {
  const steps = new Map([...(state.versions.get(app)?.steps ?? []), ...(schemas.get(app)?.steps ?? [])]);
  const moves = movesBetween(app, from, to, steps);
  const moved = typeof moves === "string" ? { ok: false as const, reason: moves } : migrateConfig(app, config, moves);
  if (!moved.ok) throw new CdpError("refused", `the rollback crosses ${what}, and the state then cannot be put in today's shape: ${moved.reason}`);
  return moved.config;
}

// Keys that went back to "not set" are left out of the object written in their place.
function withoutUndefined(value: unknown): unknown {
  return value === undefined ? undefined : (JSON.parse(JSON.stringify(value)) as unknown);
}

/**
 * The lines of a rollback to `revision`, in an order the current schemas accept (a cross-field
 * rule may need them reversed); refused (CdpError "refused") with the reason when no order passes.
 */
export function planRollback(state: JournalState, schemas: Schemas, revision: number, validators?: Map<string, AppValidator[]>): string[] {
  const lines = rollbackLines(state, schemas, revision);
  const refusal = firstRefusal(lines, schemas, state.apps, validators);
  if (refusal === undefined) return lines;
  const reversed = lines.slice().reverse();
  if (firstRefusal(reversed, schemas, state.apps, validators) === undefined) return reversed;
  throw new CdpError("refused", `rollback to revision ${revision} refused: ${refusal}`);
}

function firstRefusal(lines: string[], schemas: Schemas, apps: ReadonlyMap<string, AppConfig>, validators?: Map<string, AppValidator[]>): string | undefined {
  for (const { line, outcome } of judgeInSequence(Buffer.from(lines.join("\n")), schemas, apps, Infinity, validators)) {
    if (outcome.kind === "reject") return `${maskLine(line.text, schemas)}: ${outcome.reason}`;
  }
  return undefined;
}
