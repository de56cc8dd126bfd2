// `cdp rollout start|status|abort|promote`: a fleet's staged rollouts, asked for through the
// local watcher's inbox (a `# rollout:` line, so exactly-once stays the inbox's) and followed
// in the file the watcher keeps of them (cdp.rollouts), as `cdp status` reads cdp.watcher.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { sealForInbox, type Io } from "./commands.js";
import { parseDuration } from "../pipeline/schedule.js";
import { openDataDir } from "../store/datadir.js";
import { lockHolder } from "../store/durable.js";
import { CdpError } from "../errors.js";
import { noPositionals, required, seconds, type Values } from "./options.js";
import { receiptMarks } from "../pipeline/receipts.js";
import { REJECTS_FILE } from "../store/rejects.js";
import { areSteps, keysOf, MAX_BAKE_SECONDS, newRolloutId, readRolloutsView, rolloutDirective, type Rollout, type RolloutRequest } from "../fleet/rollouts.js";
import { readWatcherInfo, type WatcherInfo } from "../store/watcher.js";
import { appendToInbox, invokingUser } from "../pipeline/submit.js";

export async function rolloutCommand(values: Values, positionals: string[], io: Io): Promise<number> {
  const [action, ...rest] = positionals;
  const dir = required(values, "dir");
  await openDataDir(dir, { info: () => undefined });
  switch (action) {
    case "start":
      return startCommand(dir, values, rest, io);
    case "status":
      noPositionals(rest);
      return statusCommand(dir, values, io);
    case "abort":
    case "promote":
      noPositionals(rest);
      return endCommand(dir, action, values, io);
    default:
      throw new CdpError(
        "usage",
        action === undefined
          ? "say what to do: cdp rollout start|status|abort|promote"
          : `unknown rollout action "${action}" (start, status, abort or promote)`,
      );
  }
}

async function startCommand(dir: string, values: Values, lines: string[], io: Io): Promise<number> {
  if (lines.length === 0) throw new CdpError("usage", "give the change LINEs to roll out");
  if (lines.some((line) => /[\r\n]/.test(line))) throw new CdpError("usage", "a LINE may not contain a newline: give each line as its own argument");
  const id = newRolloutId();
  const { queued } = await sealForInbox(dir, values, lines);
  const forMs = values.for === undefined ? undefined : parseDuration(values.for);
  if (values.for !== undefined && forMs === undefined) throw new CdpError("usage", `--for takes a duration such as 90s, 30m, 2h, 1d, got "${values.for}"`);
  const request: RolloutRequest = { start: { id, lines: queued, ...timing(values), ...(forMs === undefined ? {} : { forMs }) } };
  await fleetWatcher(dir);
  const marks = await receiptMarks(dir);
  await append(dir, request, values.reason);
  const staged = await untilRollout(dir, id, () => true, marks.rejects, seconds(values, "wait-timeout", 10));
  if (typeof staged === "string") return refused(io, staged);
  if (!staged) return notYet(io, dir, `rollout ${id} was not staged`);
  io.stdout(`${id}\n`);
  io.stderr(`rollout ${id} staged on ${staged.hosts.join(", ")}: baking until ${staged.bakeUntil} (cdp rollout status --dir ${dir})\n`);
  if (!values.wait) return 0;
  const ended = await untilRollout(
    dir,
    id,
    (rollout) => rollout.state !== "baking",
    marks.rejects,
    values["wait-timeout"] === undefined ? Infinity : seconds(values, "wait-timeout", 10),
  );
  if (!ended || typeof ended === "string") return notYet(io, dir, `rollout ${id} has not ended`);
  return said(io, ended);
}

/** --hosts with --bake, or --steps with --every. */
function timing(values: Values): { hosts: string[]; bakeSeconds: number } | { steps: number[]; everySeconds: number } {
  if ((values.hosts === undefined) === (values.steps === undefined))
    throw new CdpError("usage", "give either --hosts H1[,H2…] with --bake SECONDS, or --steps 10,50,100 with --every SECONDS");
  if (values.hosts !== undefined) {
    if (values.bake === undefined) throw new CdpError("usage", "--hosts needs --bake SECONDS: how long the canaries run the change before it is promoted");
    const hosts = values.hosts
      .split(",")
      .map((host) => host.trim())
      .filter((host) => host !== "");
    if (hosts.length === 0) throw new CdpError("usage", "--hosts names at least one host (its --cluster-host name)");
    return { hosts, bakeSeconds: seconds(values, "bake", 0, MAX_BAKE_SECONDS) / 1000 };
  }
  if (values.every === undefined) throw new CdpError("usage", "--steps needs --every SECONDS: how long each step bakes");
  const steps = values.steps!.split(",").map(Number);
  if (!areSteps(steps)) {
    throw new CdpError("usage", `--steps must be rising percentages that end with 100, e.g. 10,50,100; got "${values.steps}"`);
  }
  return { steps, everySeconds: seconds(values, "every", 0, MAX_BAKE_SECONDS) / 1000 };
}

async function statusCommand(dir: string, values: Values, io: Io): Promise<number> {
  const view = await readRolloutsView(dir);
  if (values.json) {
    io.stdout(`${JSON.stringify(view?.rollouts ?? [], null, 2)}\n`);
    return 0;
  }
  if (!view) {
    io.stderr(`no rollouts known in ${dir}: its watcher is not in a fleet, or has not started\n`);
    return 0;
  }
  if ((await lockHolder(dir)) === undefined)
    io.stderr(`no watcher runs on ${dir}: as host ${view.host} knew them at revision ${view.revision} (${view.time})\n`);
  if (view.rollouts.length === 0) io.stderr("no rollouts yet\n");
  for (const rollout of view.rollouts) io.stdout(`${describe(rollout)}\n`);
  return 0;
}

/** One rollout in one line of words. */
export function describe(rollout: Rollout, now = Date.now()): string {
  const lines = keysOf(rollout).join(", ");
  const why = rollout.why ? `  (why: ${rollout.why})` : "";
  if (rollout.state === "baking") {
    const left = Math.max(0, Math.ceil((Date.parse(rollout.bakeUntil) - now) / 1000));
    const step = rollout.steps ? ` step ${rollout.step! + 1} of ${rollout.steps.length} (${rollout.steps[rollout.step!]}%)` : "";
    return `${rollout.id}  ${rollout.app}  baking${step} on ${rollout.hosts.join(",")}: ${left} s left (until ${rollout.bakeUntil})  ${lines}${why}`;
  }
  return `${rollout.id}  ${rollout.app}  ${rollout.state} at revision ${rollout.ended} (${rollout.endedAt}): ${rollout.reason ?? ""}  ${lines}${why}`;
}

async function endCommand(dir: string, action: "abort" | "promote", values: Values, io: Io): Promise<number> {
  await fleetWatcher(dir);
  const baking = (await readRolloutsView(dir))?.rollouts.filter((rollout) => rollout.state === "baking") ?? [];
  const chosen =
    values.id !== undefined
      ? baking.filter((rollout) => rollout.id === values.id)
      : values.app !== undefined
        ? baking.filter((rollout) => rollout.app === values.app)
        : baking;
  if (chosen.length === 0) {
    io.stderr(`cdp: no rollout${values.id ? ` ${values.id}` : values.app ? ` of ${values.app}` : ""} is in progress\n`);
    return 1;
  }
  if (chosen.length > 1)
    throw new CdpError(
      "usage",
      `${chosen.length} rollouts are in progress (${chosen.map((rollout) => `${rollout.id} of ${rollout.app}`).join(", ")}): say which with --id or --app`,
    );
  const { id } = chosen[0]!;
  const marks = await receiptMarks(dir);
  await append(
    dir,
    action === "abort" ? { abort: { id, ...(values.reason ? { reason: values.reason } : {}) } } : { promote: { id } },
    action === "abort" ? undefined : values.reason,
  );
  const ended = await untilRollout(dir, id, (rollout) => rollout.state !== "baking", marks.rejects, seconds(values, "wait-timeout", 10));
  if (typeof ended === "string") return refused(io, ended);
  if (!ended) return notYet(io, dir, `rollout ${id} was not ${action}ed yet`);
  io.stdout(`${id}\n`);
  const code = said(io, ended);
  return ended.state === (action === "abort" ? "aborted" : "promoted") ? 0 : code || 1;
}

/** The watcher running on `dir`, which must be a fleet's: a rollout is a fleet's. */
async function fleetWatcher(dir: string): Promise<WatcherInfo> {
  if ((await lockHolder(dir)) === undefined)
    throw new CdpError("usage", `no watcher runs on ${dir}: a rollout goes through a fleet host's running watcher (cdp watch --cluster …)`);
  const info = await readWatcherInfo(dir);
  if (info && !info.fleet) throw new CdpError("usage", `the watcher on ${dir} is a single host: rollouts are for a fleet (cdp watch --cluster …)`);
  return info ?? { pid: 0, started: "" };
}

/** The request as one `# rollout:` line in the inbox, after who asks (and why). */
async function append(dir: string, request: RolloutRequest, reason: string | undefined): Promise<void> {
  const by = invokingUser().replace(/\s+/g, "_");
  await appendToInbox(dir, `# by: ${by}\n${reason ? `# reason: ${reason.replace(/[\r\n]+/g, " ")}\n` : ""}${rolloutDirective(request)}\n`);
}

/**
 * The rollout once `done` says so (from cdp.rollouts), or why its request was refused (from
 * cdp.rej, after `rejectsFrom`), or undefined after `timeoutMs`.
 */
async function untilRollout(
  dir: string,
  id: string,
  done: (rollout: Rollout) => boolean,
  rejectsFrom: number,
  timeoutMs: number,
): Promise<Rollout | string | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const rollout = (await readRolloutsView(dir))?.rollouts.find((known) => known.id === id);
    if (rollout && done(rollout)) return rollout;
    const refusal = await refusalOf(dir, id, rejectsFrom);
    if (refusal !== undefined) return refusal;
    // the watcher stopped: the fleet goes on with the rollout, but this host no longer hears of it
    if (Date.now() > deadline || (await lockHolder(dir)) === undefined) return undefined;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function refusalOf(dir: string, id: string, from: number): Promise<string | undefined> {
  const text = await readFile(join(dir, REJECTS_FILE)).then(
    (buffer) => buffer.subarray(from).toString("utf8"),
    () => "",
  );
  const lines = text.split("\n");
  const at = lines.findIndex((line, i) => i > 0 && line.startsWith("# rollout: ") && line.includes(`"id":${JSON.stringify(id)}`));
  return at === -1 ? undefined : (/ reason: (.*)$/.exec(lines[at - 1]!)?.[1] ?? "refused");
}

function said(io: Io, rollout: Rollout): number {
  io.stderr(`rollout ${rollout.id} ${rollout.state} at revision ${rollout.ended}: ${rollout.reason ?? ""}\n`);
  return rollout.state === "promoted" ? 0 : 1;
}

function refused(io: Io, reason: string): number {
  io.stderr(`cdp: the rollout was refused: ${reason}\n`);
  return 1;
}

async function notYet(io: Io, dir: string, what: string): Promise<number> {
  const stopped = (await lockHolder(dir)) === undefined;
  io.stderr(
    stopped
      ? `cdp: ${what}: the watcher on ${dir} stopped (the fleet's other hosts carry a rollout on; ask one of them: cdp rollout status)\n`
      : `cdp: ${what} in time: is the watcher on ${dir} busy, or waiting for etcd? (cdp rollout status --dir ${dir})\n`,
  );
  return 1;
}
