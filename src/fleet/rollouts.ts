// Staged rollouts in a fleet: a change applied first on some hosts (the canaries) while it bakes,
// then promoted to every host — or aborted, the canaries taking the previous values back — as
// AppConfig's deployment strategies do. Every step is a fleet revision (staged, widened,
// promoted, aborted), so every host applies it in the same order and a host away catches up into
// the right state; the rollout's current state also lives in etcd (<prefix>/rollouts/ID), so any
// host can carry it on. What a step is and what it does are plain functions here; the member
// applies steps, the batch judges requests, and each host's clock (rollout-clock.ts) decides;
// FleetRollouts (at the end) is what one host knows of them.
import { randomBytes } from "node:crypto";
import { readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { HostStatus } from "./hosts.js";
import { encodeChange } from "../store/records.js";
import { parseLine } from "../lines/parse.js";
import type { KeyInfo, Schemas } from "../schemas/schemas.js";
import { validateChange, type AppValidator, type ParsedChange } from "../schemas/validate.js";
import { PendingConfigs, type Configs } from "../lines/values.js";
import type { SecretsKey } from "../lines/sealed.js";
import type { Scheduled } from "../store/records.js";

/** A rollout as the fleet knows it. */
export interface Rollout {
  id: string;
  app: string;
  /** The change lines it rolls out (all of one app). */
  lines: string[];
  /** The top-level keys those lines touch, as they were before (change lines): what an abort puts back. */
  before: string[];
  /** The hosts that have applied it while it bakes (the canaries). */
  hosts: string[];
  state: "baking" | "promoted" | "aborted";
  /** When the bake (or the current step) ends. */
  bakeUntil: string;
  /** A linear rollout: the percentages of the fleet's hosts, step by step, and how long each bakes. */
  steps?: number[];
  everySeconds?: number;
  /** Which of `steps` is baking. */
  step?: number;
  /** Why it was started (`--reason`: recorded with its changes), and by whom. */
  why?: string;
  by?: string;
  /** Why it ended: aborted (host and why), promoted (at the deadline, or early and by whom). */
  reason?: string;
  /** The host that started it, the inbox line it came from there, and that line's seq (for its cdp.rej). */
  startedOn: string;
  source: string;
  seq: number;
  started: string;
  /** The fleet revisions that staged and ended it. */
  staged: number;
  ended?: number;
  endedAt?: string;
  /** A temporary change (--for): once promoted, put back after this many ms; `after`: the top-level keys as the lines leave them. */
  forMs?: number;
  after?: string[];
}

/** One rollout decision, as a fleet record carries it: the step and the rollout's state after it. */
export interface RolloutStep {
  step: "staged" | "widened" | "promoted" | "aborted";
  rollout: Rollout;
  /** For `widened`: the hosts that apply it now. */
  added?: string[];
}

/** What an operator asks for, as the `# rollout:` directive line in the inbox carries it. */
export type RolloutRequest =
  | { start: { id: string; lines: string[]; hosts?: string[]; bakeSeconds?: number; steps?: number[]; everySeconds?: number; forMs?: number } }
  | { abort: { id: string; reason?: string } }
  | { promote: { id: string } };

const DIRECTIVE = "# rollout: ";

/** The inbox line that asks for a rollout step (one line: it is judged and committed as one). */
export function rolloutDirective(request: RolloutRequest): string {
  return `${DIRECTIVE}${JSON.stringify(request)}`;
}

/** Whether an inbox line asks for a rollout's step (judged as one, not as a comment). */
export function isRolloutDirective(text: string): boolean {
  return text.startsWith(DIRECTIVE);
}

/** A rollout directive's request, a reason it is not one that can be read, or undefined for any other line. */
export function readRolloutDirective(text: string): RolloutRequest | string | undefined {
  if (!isRolloutDirective(text)) return undefined;
  let request: RolloutRequest;
  try {
    request = JSON.parse(text.slice(DIRECTIVE.length)) as RolloutRequest;
  } catch {
    return "a rollout directive must be '# rollout: ' and JSON (use cdp rollout or POST /v1/rollouts)";
  }
  const [kind] = Object.keys(request ?? {});
  const body = (request as Record<string, { id?: unknown } | undefined>)[kind ?? ""];
  if (!body || typeof body.id !== "string" || !/^[\w.-]{1,64}$/.test(body.id) || !["start", "abort", "promote"].includes(kind!)) {
    return "a rollout directive names start, abort or promote with an id of letters, digits, '.', '_' or '-'";
  }
  return request;
}

/** A fresh rollout id: the date and a few random letters (sorts by time, reads aloud). */
export function newRolloutId(now = new Date()): string {
  return `r-${now.toISOString().slice(0, 19).replace(/[-:T]/g, "")}-${randomBytes(3).toString("hex")}`;
}

/** What the judging of a rollout request needs. */
export interface RolloutContext {
  schemas: Schemas;
  validators: ReadonlyMap<string, readonly AppValidator[]>;
  current: Configs;
  /** The rollouts this host knows (by id), and the one in progress for an app. */
  rollouts: { get(id: string): Rollout | undefined; inProgress(app: string): Rollout | undefined };
  /** The fleet's hosts as they say they are (or why they could not be listed). */
  hosts: HostStatus[] | string;
  host: string;
  time: string;
  revision: number;
  source: string;
  seq: number;
  by?: string;
  reason?: string;
  /** The rollout's lines (and the values they replace) are kept with secret values sealed with it. */
  sealing?: SecretsKey;
}

/** The step an operator's request makes, judged against the fleet's state; or why it is refused. */
export function judgeRollout(request: RolloutRequest, context: RolloutContext): { step: RolloutStep } | { reason: string } {
  if ("start" in request) return startRollout(request.start, context);
  const id = "abort" in request ? request.abort.id : request.promote.id;
  const rollout = context.rollouts.get(id);
  if (!rollout) return { reason: `no rollout ${id} in this fleet` };
  if (rollout.state !== "baking") return { reason: `rollout ${id} is over: ${rollout.state} at revision ${rollout.ended}` };
  const by = context.by ? ` by ${context.by}` : "";
  if ("abort" in request)
    return { step: endRollout(rollout, "aborted", `aborted${by} on ${context.host}${request.abort.reason ? `: ${request.abort.reason}` : ""}`, context) };
  return {
    step: endRollout(rollout, "promoted", `promoted${by} on ${context.host} before the bake ended${context.reason ? `: ${context.reason}` : ""}`, context),
  };
}

function startRollout(start: Extract<RolloutRequest, { start: unknown }>["start"], context: RolloutContext): { step: RolloutStep } | { reason: string } {
  const { id, lines } = start;
  if (context.rollouts.get(id)) return { reason: `rollout ${id} was started already` };
  if (!Array.isArray(lines) || lines.length === 0 || lines.some((line) => typeof line !== "string"))
    return { reason: "a rollout needs at least one change line" };
  const timing = rolloutTiming(start);
  if (typeof timing === "string") return { reason: timing };
  if (typeof context.hosts === "string") return { reason: `cannot list the fleet's hosts: ${context.hosts}` };
  const hosts = typeof timing.hosts === "number" ? pickHosts(context.hosts, timing.hosts) : timing.hosts;
  const known = new Map(context.hosts.map((host) => [host.host, host]));
  if (hosts.length === 0) return { reason: `no host of the fleet is ready to start on (its hosts: ${[...known.keys()].join(", ") || "none"})` };
  for (const name of hosts) {
    const host = known.get(name);
    if (!host) return { reason: `no host named ${name} in the fleet (its hosts: ${[...known.keys()].join(", ") || "none"})` };
    if (!host.ready) return { reason: `canary ${name} is not ready: ${host.reason ?? "it says so"}` };
  }
  if (start.forMs !== undefined && (!Number.isInteger(start.forMs) || start.forMs <= 0)) return { reason: "a rollout's for must be a positive duration" };
  const judged = judgeLines(lines, context);
  if ("reason" in judged) return judged;
  const { app, before, after } = judged;
  const busy = context.rollouts.inProgress(app);
  if (busy) return { reason: inProgressReason(busy) };
  const bakeUntil = new Date(Date.parse(context.time) + timing.seconds * 1000).toISOString();
  const rollout: Rollout = {
    id,
    app,
    lines: judged.lines,
    before,
    hosts,
    state: "baking",
    bakeUntil,
    ...(timing.steps ? { steps: timing.steps, everySeconds: timing.seconds, step: 0 } : {}),
    ...(context.by ? { by: context.by } : {}),
    ...(context.reason ? { why: context.reason } : {}),
    startedOn: context.host,
    source: context.source,
    seq: context.seq,
    started: context.time,
    staged: context.revision,
    ...(start.forMs === undefined ? {} : { forMs: start.forMs, after }),
  };
  // each step's record and the rollout's key carry it to etcd in one request (1.5 MiB by default)
  const size = Buffer.byteLength(JSON.stringify(rollout));
  if (size > MAX_ROLLOUT_BYTES) {
    return {
      reason: `too large to roll out: with the values it would put back it takes ${Math.ceil(size / 1024)} KiB, and a rollout's steps go to etcd in one request (at most ${MAX_ROLLOUT_BYTES / 1024} KiB); change these keys without a rollout, or a smaller key at a time`,
    };
  }
  return { step: { step: "staged", rollout } };
}

/** A rollout travels twice in a step's transaction (its record, its key): both fit in one etcd request. */
const MAX_ROLLOUT_BYTES = 384 << 10;

/** The longest bake (or step): a deadline must be a date, and a bake of years is a typo. */
export const MAX_BAKE_SECONDS = 30 * 86_400;

/** The canaries (or the first step's share of the hosts) and how long each stage bakes; or what is wrong. */
function rolloutTiming(start: {
  hosts?: string[];
  bakeSeconds?: number;
  steps?: number[];
  everySeconds?: number;
}): { hosts: string[] | number; seconds: number; steps?: number[] } | string {
  const positive = (value: unknown) => typeof value === "number" && Number.isFinite(value) && value > 0 && value <= MAX_BAKE_SECONDS;
  if (start.steps !== undefined) {
    const steps = start.steps;
    if (start.hosts !== undefined) return "give either hosts (with a bake) or steps (with every), not both";
    if (!areSteps(steps)) return "steps must be rising percentages of the fleet's hosts that end with 100, e.g. 10,50,100";
    if (!positive(start.everySeconds)) return "a rollout in steps needs every: the seconds each step bakes (at most 30 days)";
    return { hosts: steps[0]!, seconds: start.everySeconds!, steps };
  }
  if (!Array.isArray(start.hosts) || start.hosts.length === 0 || start.hosts.some((host) => typeof host !== "string" || host === ""))
    return "a rollout needs the canary hosts (or steps)";
  if (!positive(start.bakeSeconds)) return "a rollout needs a bake: the seconds the canaries run it before it is promoted (at most 30 days)";
  return { hosts: [...new Set(start.hosts)], seconds: start.bakeSeconds! };
}

/** Rising whole percentages of the fleet's hosts that end with 100 (the promotion). */
export function areSteps(steps: unknown): steps is number[] {
  return (
    Array.isArray(steps) &&
    steps.length > 0 &&
    steps.every((step, i) => Number.isInteger(step) && step > 0 && step <= 100 && (i === 0 || step > steps[i - 1])) &&
    steps.at(-1) === 100
  );
}

/** `percent` of the fleet's hosts (at least one), the first ready ones by name: the same hosts for the same fleet. */
export function pickHosts(hosts: readonly HostStatus[], percent: number): string[] {
  const ready = hosts
    .filter((host) => host.ready)
    .map((host) => host.host)
    .sort();
  return ready.slice(0, Math.max(1, Math.ceil((hosts.length * percent) / 100)));
}

/** Each line must be a change of one app that would be accepted; the keys it touches must have a value (an abort puts it back). */
function judgeLines(lines: string[], context: RolloutContext): { app: string; lines: string[]; before: string[]; after: string[] } | { reason: string } {
  const { schemas, validators } = context;
  let app: string | undefined;
  const pending = new PendingConfigs(context.current);
  const touched = new Set<string>();
  const encoded: string[] = [];
  for (const [i, line] of lines.entries()) {
    const parsed = parseLine(line);
    const which = `line ${i + 1} (${line.slice(0, 80)})`;
    if (parsed.kind !== "change") return { reason: `${which} is not a change line${parsed.kind === "error" ? `: ${parsed.message}` : ""}` };
    if (app !== undefined && parsed.app !== app) return { reason: `a rollout changes one app: ${which} changes ${parsed.app}, not ${app}` };
    app ??= parsed.app;
    const verdict = validateChange({ schemas, validators, current: pending }, parsed as ParsedChange);
    if (!verdict.ok) return { reason: `${which}: ${verdict.reason}` };
    const top = parsed.path[0]!;
    if (context.current.valueOf(app, top) === undefined)
      return { reason: `${which}: ${app}.${top} has no value yet, so an abort could not take it back: set it with cdp push first` };
    touched.add(top);
    pending.set(app, top, verdict.change.topValue);
    encoded.push(encodeChange(app, verdict.change.key, verdict.change.value, schemas.get(app)!.key(verdict.change.path) as KeyInfo, context.sealing));
  }
  const schema = schemas.get(app!)!;
  const before = [...touched].map((key) => encodeChange(app!, key, context.current.valueOf(app!, key), schema.key([key]) as KeyInfo, context.sealing));
  const after = [...touched].map((key) => encodeChange(app!, key, pending.valueOf(app!, key), schema.key([key]) as KeyInfo, context.sealing));
  return { app: app!, lines: encoded, before, after };
}

/** Why a change to an app in a rollout is refused. */
export function inProgressReason(rollout: Rollout): string {
  return `${rollout.app} is in rollout ${rollout.id} (baking on ${rollout.hosts.join(", ")} until ${rollout.bakeUntil}): changes to it wait until the rollout is promoted or aborted (cdp rollout status)`;
}

/** The last step of a rollout: promoted to every host, or aborted (the canaries take the values back). */
export function endRollout(rollout: Rollout, state: "promoted" | "aborted", reason: string, at: { time: string; revision: number }): RolloutStep {
  return { step: state, rollout: { ...rollout, state, reason, ended: at.revision, endedAt: at.time } };
}

/**
 * What the clock decides for a baking rollout, from the hosts as they say they are: abort when a
 * canary is gone or not ready, widen or promote once the bake is over; undefined: nothing yet.
 */
export function decideRollout(rollout: Rollout, hosts: readonly HostStatus[], at: { time: string; revision: number }): RolloutStep | undefined {
  if (rollout.state !== "baking") return undefined;
  const known = new Map(hosts.map((host) => [host.host, host]));
  for (const name of rollout.hosts) {
    const host = known.get(name);
    if (!host) return endRollout(rollout, "aborted", `canary ${name} disappeared (it no longer says how it is)`, at);
    if (!host.ready) return endRollout(rollout, "aborted", `canary ${name} is not ready: ${host.reason ?? "it says so"}`, at);
  }
  if (Date.parse(at.time) < Date.parse(rollout.bakeUntil)) return undefined;
  const next = rollout.steps && rollout.step !== undefined ? rollout.steps[rollout.step + 1] : undefined;
  if (next === undefined || next >= 100) return endRollout(rollout, "promoted", "the bake ended with no veto", at);
  const widened = [...new Set([...rollout.hosts, ...pickHosts(hosts, next)])];
  const added = widened.filter((host) => !rollout.hosts.includes(host));
  const bakeUntil = new Date(Date.parse(at.time) + rollout.everySeconds! * 1000).toISOString();
  return { step: "widened", added, rollout: { ...rollout, hosts: widened, step: rollout.step! + 1, bakeUntil } };
}

/** What one host does at a step: the change lines it applies (and why), or nothing. */
export function linesAt(step: RolloutStep, host: string): { lines: string[]; reason: string } | undefined {
  const { rollout } = step;
  const canary = rollout.hosts.includes(host);
  const why = rollout.why ? `: ${rollout.why}` : "";
  switch (step.step) {
    case "staged":
      return canary
        ? { lines: rollout.lines, reason: `staged by rollout ${rollout.id} on ${rollout.hosts.join(",")}, baking until ${rollout.bakeUntil}${why}` }
        : undefined;
    case "widened":
      return step.added?.includes(host)
        ? { lines: rollout.lines, reason: `rollout ${rollout.id} widened to ${rollout.hosts.join(",")}, baking until ${rollout.bakeUntil}${why}` }
        : undefined;
    case "promoted":
      return canary ? undefined : { lines: rollout.lines, reason: `rollout ${rollout.id} ${rollout.reason ?? "promoted"}${why}` };
    case "aborted":
      return canary ? { lines: rollout.before, reason: `rollout ${rollout.id} ${rollout.reason ?? "aborted"}` } : undefined;
  }
}

/** What one host says of a step it applies nothing for (its journal's marker). */
export function passedAt(step: RolloutStep, host: string): string {
  const { rollout } = step;
  if (step.step === "promoted") return `rollout ${rollout.id} promoted (applied here while it baked)`;
  if (step.step === "aborted") return `rollout ${rollout.id} ${rollout.reason ?? "aborted"} (never applied here)`;
  return `rollout ${rollout.id} ${step.step} on ${rollout.hosts.join(",")}, baking until ${rollout.bakeUntil}; not applied on ${host}`;
}

/** The keys a rollout changes (app.key), for words that must not show a secret value. */
export function keysOf(rollout: Rollout): string[] {
  return rollout.lines.map((line) => line.split(":", 2).join("."));
}

/** A rollout as the sidecar serves it: a secret key's value never shown. */
export function servedRollout(rollout: Rollout, schemas: Schemas): Rollout {
  const mask = (line: string) => {
    const parsed = parseLine(line);
    const info = parsed.kind === "change" ? schemas.get(parsed.app)?.key(parsed.path) : undefined;
    return typeof info === "object" && info.secret ? `${line.split(":", 2).join(":")}:[secret]` : line;
  };
  return { ...rollout, lines: rollout.lines.map(mask), before: rollout.before.map(mask) };
}

/** The file a fleet host keeps its rollouts in, for `cdp rollout status` and `cdp get` (the watcher writes it). */
export const ROLLOUTS_FILE = "cdp.rollouts";

export interface RolloutsView {
  host: string;
  revision: number;
  time: string;
  /** The rollouts, newest first: those in progress and the recent ones. */
  rollouts: Rollout[];
}

export async function writeRolloutsView(dir: string, view: RolloutsView): Promise<void> {
  const path = join(dir, ROLLOUTS_FILE);
  await writeFile(`${path}.tmp`, `${JSON.stringify(view, null, 2)}\n`, { mode: 0o600 });
  await rename(`${path}.tmp`, path);
}

export async function readRolloutsView(dir: string): Promise<RolloutsView | undefined> {
  try {
    return JSON.parse(await readFile(join(dir, ROLLOUTS_FILE), "utf8")) as RolloutsView;
  } catch {
    return undefined;
  }
}

/** The rollouts one host knows: those in progress at its revision and the recent ones. */
export class FleetRollouts {
  readonly #byId = new Map<string, Rollout>();
  static readonly KEPT = 20;

  /** From etcd at join: each rollout as it stood at `revision` (a step after it comes through the log). */
  load(rollouts: readonly Rollout[], revision: number): void {
    for (const rollout of rollouts) {
      if (rollout.staged > revision) continue;
      const { ended, endedAt: _endedAt, ...baking } = rollout;
      this.#byId.set(rollout.id, ended !== undefined && ended <= revision ? rollout : { ...baking, state: "baking" });
    }
    this.#forgetOld();
  }

  take(step: RolloutStep): void {
    this.#byId.delete(step.rollout.id);
    this.#byId.set(step.rollout.id, step.rollout);
    this.#forgetOld();
  }

  get(id: string): Rollout | undefined {
    return this.#byId.get(id);
  }

  inProgress(app: string): Rollout | undefined {
    for (const rollout of this.#byId.values()) if (rollout.app === app && rollout.state === "baking") return rollout;
    return undefined;
  }

  baking(): Rollout[] {
    return [...this.#byId.values()].filter((rollout) => rollout.state === "baking");
  }

  /** Newest first. */
  list(): Rollout[] {
    return [...this.#byId.values()].sort((a, b) => b.staged - a.staged);
  }

  #forgetOld(): void {
    const over = this.list().filter((rollout) => rollout.state !== "baking");
    for (const rollout of over.slice(FleetRollouts.KEPT)) this.#byId.delete(rollout.id);
  }
}

/** A temporary rollout's end (--for), due once it is promoted: each top-level key put back unless changed since. */
export function rolloutExpiry(step: RolloutStep, time: string): Scheduled | undefined {
  const { rollout } = step;
  if (step.step !== "promoted" || rollout.forMs === undefined || !rollout.after) return undefined;
  return {
    id: `${rollout.id}-end`,
    at: new Date(Date.parse(time) + rollout.forMs).toISOString(),
    lines: rollout.lines,
    restore: rollout.before.map((line, i) => ({ line, holds: rollout.after![i]! })),
    ...(rollout.by ? { by: rollout.by } : {}),
    reason: rollout.why ?? `rollout ${rollout.id}`,
  };
}
