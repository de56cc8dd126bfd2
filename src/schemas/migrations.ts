// Schema versions and the steps between them, the appup of cdp: a schema declares its version
// (`x-cdp-version`) and, for each version N, the JSON Patch (RFC 6902) documents that take an
// app's whole config from N−1 up to N and back down (`x-cdp-migrations`). fast-json-patch applies
// them: widely used, it checks each operation's form and refuses changes to prototypes.
import jsonpatch, { type Operation } from "fast-json-patch";
import type { AnySchemaObject } from "ajv";
import { isObject, type AppConfig } from "../lines/values.js";

export type { Operation } from "fast-json-patch";

/** The step from version N−1 to N, and back. */
export interface Step {
  up: Operation[];
  down: Operation[];
}

/** Steps by the version they lead to. */
export type Steps = ReadonlyMap<number, Step>;

export const VERSION_KEYWORD = "x-cdp-version";
export const MIGRATIONS_KEYWORD = "x-cdp-migrations";

/** What ajv's strict mode is told of the two keywords (their form is checked by `readVersioning`). */
export const versionKeywords = [
  { keyword: VERSION_KEYWORD, metaSchema: { type: "integer", minimum: 1 } },
  { keyword: MIGRATIONS_KEYWORD, metaSchema: { type: "object" } },
];

/** The version a schema declares, or undefined when it declares none (it is then version 1, and events do not say it). */
export function declaredVersion(schema: { version: number; source: AnySchemaObject }): number | undefined {
  return VERSION_KEYWORD in schema.source ? schema.version : undefined;
}

/** The version a schema declares (1 when it does not) and its steps; or what is wrong with them. */
export function readVersioning(schema: AnySchemaObject): { version: number; steps: Map<number, Step> } | string {
  const version = schema[VERSION_KEYWORD] ?? 1;
  if (!Number.isSafeInteger(version) || version < 1) return `"${VERSION_KEYWORD}" must be an integer of at least 1, got ${JSON.stringify(version)}`;
  const declared: unknown = schema[MIGRATIONS_KEYWORD] ?? {};
  if (!isObject(declared)) return `"${MIGRATIONS_KEYWORD}" must map versions to {"up": [...], "down": [...]}`;
  const steps = new Map<number, Step>();
  for (const [key, step] of Object.entries(declared)) {
    const where = `"${MIGRATIONS_KEYWORD}"["${key}"]`;
    const to = /^[1-9][0-9]*$/.test(key) ? Number(key) : NaN;
    if (!(to >= 2)) return `${where}: a step is named by the version it leads to, 2 or more`;
    if (to > version) return `${where}: leads past "${VERSION_KEYWORD}" ${version}`;
    if (!isObject(step) || !Array.isArray(step.up) || !Array.isArray(step.down)) return `${where} must be {"up": [...], "down": [...]}, JSON Patch documents`;
    for (const direction of ["up", "down"] as const) {
      const invalid = jsonpatch.validate(step[direction] as Operation[]);
      if (invalid) return `${where}.${direction}[${invalid.index ?? 0}]: ${invalid.message.split("\n")[0]}`;
    }
    steps.set(to, { up: step.up as Operation[], down: step.down as Operation[] });
  }
  return { version, steps };
}

/** One step on the way, in the direction taken. */
export interface Move {
  to: number;
  from: number;
  operations: Operation[];
}

/**
 * The steps from version `from` to `to` (up through each version in between, or down), taken
 * from those known; or which one is missing (a release upgrade needs every step on the way).
 */
export function movesBetween(app: string, from: number, to: number, known: Steps): Move[] | string {
  const moves: Move[] = [];
  for (let at = from; at !== to; at += to > from ? 1 : -1) {
    const next = to > from ? at + 1 : at - 1;
    const step = known.get(Math.max(at, next));
    if (!step) {
      return to > from
        ? `${app} cannot go from version ${at} to ${next}: "${MIGRATIONS_KEYWORD}" has no step "${next}"`
        : `${app} cannot go back from version ${at} to ${next}: no down step "${at}" is recorded or in the schema`;
    }
    moves.push({ from: at, to: next, operations: to > from ? step.up : step.down });
  }
  return moves;
}

/** The config after the moves (a copy); or which operation failed, and why, in an operator's words. */
export function migrateConfig(app: string, config: AppConfig, moves: readonly Move[]): { ok: true; config: AppConfig } | { ok: false; reason: string } {
  let document: unknown = structuredClone(config);
  for (const move of moves) {
    try {
      document = jsonpatch.applyPatch(document, move.operations, true, true).newDocument;
    } catch (error) {
      const { name, index, operation } = error as { name?: string; index?: number; operation?: Operation };
      const op = operation ?? move.operations[index ?? 0];
      return { ok: false, reason: `${app} ${move.from} → ${move.to}: operation ${(index ?? 0) + 1} (${describeOperation(op)}) failed: ${failure(name, op)}` };
    }
    if (!isObject(document)) return { ok: false, reason: `${app} ${move.from} → ${move.to}: the config must stay an object` };
  }
  return { ok: true, config: document as AppConfig };
}

function describeOperation(op: Operation | undefined): string {
  if (!op) return "?";
  return "from" in op ? `${op.op} ${op.from} → ${op.path}` : `${op.op} ${op.path}`;
}

function failure(name: string | undefined, op: Operation | undefined): string {
  switch (name) {
    case "OPERATION_PATH_UNRESOLVABLE":
      return `nothing is at ${op?.path}`;
    case "OPERATION_FROM_UNRESOLVABLE":
      return `nothing is at ${op && "from" in op ? op.from : "?"}`;
    case "TEST_OPERATION_FAILED":
      return `the value at ${op?.path} is not the one the test expects`;
    case "OPERATION_PATH_CANNOT_ADD":
      return `${op?.path} cannot be added there (is its parent missing?)`;
    default:
      return name ?? "the patch does not apply";
  }
}
