// A fleet host's part in its rollouts: it knows them (from etcd when it joins, then from each step
// in the log), keeps them in cdp.rollouts for the commands, and runs the clock — twice a second
// every host looks at the baking rollouts and commits the step they are due (a canary gone or not
// ready: aborted; the bake over: promoted or widened); etcd's compare-and-swap on the head lets
// one host's decision through. A subscriber's veto on a canary aborts at once.
import type { Logger } from "pino";
import type { FleetLog } from "./log.js";
import type { FleetMember } from "./member.js";
import { rejectionRecord } from "../store/rejects.js";
import type { Schemas } from "../schemas/schemas.js";
import {
  decideRollout,
  endRollout,
  FleetRollouts,
  linesAt,
  passedAt,
  rolloutExpiry,
  servedRollout,
  writeRolloutsView,
  type Rollout,
  type RolloutStep,
} from "./rollouts.js";
import type { ConfigTable } from "../store/table.js";

export interface ClockOptions {
  dir: string;
  host: string;
  fleet: FleetLog;
  member: () => FleetMember;
  table: ConfigTable;
  /** The schemas in force: cdp.rollouts shows secret values masked, as the sidecar does. */
  schemas: () => Schemas;
  /** Run a commit in its turn with the batches. */
  inTurn: (task: () => Promise<void>) => Promise<void>;
  /** The count of processed inbox lines (a decision's record carries it). */
  seq: () => number;
  stopping: () => boolean;
  /** A step was applied here (for the event stream and the sidecar's history): what was recorded when it changed nothing here. */
  stepped: (step: RolloutStep, nothingHere: { revision: number; reason: string } | undefined) => void;
  /** Append records to cdp.rej (an abort of a rollout this host started). */
  reject: (text: string) => Promise<void>;
  fault: (error: unknown) => void;
  log: Logger;
}

export class RolloutClock {
  readonly known = new FleetRollouts();
  readonly #options: ClockOptions;
  #ticking: NodeJS.Timeout | undefined;
  #checking = false;
  #view: Promise<void> = Promise.resolve();

  constructor(options: ClockOptions) {
    this.#options = options;
  }

  start(): void {
    this.#ticking ??= setInterval(() => void this.#check(), 500).unref();
    this.#writeView();
  }

  stop(): void {
    clearInterval(this.#ticking);
  }

  /** A step applied here: told to whoever listens, written for `cdp rollout status`; an abort of a rollout started here goes to cdp.rej. */
  stepApplied(step: RolloutStep): void {
    const { rollout } = step;
    const { host, log } = this.#options;
    log[step.step === "aborted" ? "warn" : "info"](
      { rollout: rollout.id, app: rollout.app, step: step.step, hosts: rollout.hosts, ...(rollout.reason ? { reason: rollout.reason } : {}) },
      `rollout ${step.step}`,
    );
    this.#options.stepped(step, linesAt(step, host) ? undefined : { revision: this.#options.table.revision, reason: passedAt(step, host) });
    this.#writeView();
    if (step.step !== "aborted" || rollout.startedOn !== host) return;
    const time = rollout.endedAt ?? new Date().toISOString();
    const reason = `rollout ${rollout.id} ${rollout.reason ?? "aborted"}`;
    void this.#options
      .inTurn(() =>
        this.#options.reject(rollout.lines.map((text) => rejectionRecord({ seq: rollout.seq, time, source: rollout.source, reason, text })).join("")),
      )
      .catch(this.#options.fault);
  }

  /** A subscriber on a canary vetoes a change its rollout staged: the rollout is aborted (true), unless it is over. */
  veto(id: string, reason: string): boolean {
    const rollout = this.known.get(id);
    const { host } = this.#options;
    if (rollout?.state !== "baking" || !rollout.hosts.includes(host)) return false;
    const why = `canary ${host} vetoed it: ${String(reason).replace(/[\r\n]+/g, " ")}`;
    void this.#options.inTurn(() => this.#commitStep(id, (baking, at) => endRollout(baking, "aborted", why, at))).catch(this.#options.fault);
    return true;
  }

  #writeView(): void {
    const { dir, host, table, log } = this.#options;
    const schemas = this.#options.schemas();
    const view = {
      host,
      revision: table.revision,
      time: new Date().toISOString(),
      rollouts: this.known.list().map((rollout) => servedRollout(rollout, schemas)),
    };
    this.#view = this.#view.then(() => writeRolloutsView(dir, view)).catch((error: unknown) => log.warn({ err: error }, "could not write cdp.rollouts"));
  }

  async #check(): Promise<void> {
    if (this.#checking || this.#options.stopping() || this.known.baking().length === 0) return;
    this.#checking = true;
    try {
      const hosts = await this.#options.fleet.hosts();
      for (const { id } of this.known.baking()) await this.#options.inTurn(() => this.#commitStep(id, (rollout, at) => decideRollout(rollout, hosts, at)));
    } catch (error) {
      this.#options.log.debug({ err: error }, "could not check the rollouts; trying again");
    } finally {
      this.#checking = false;
    }
  }

  /** Commit the step `decide` makes of a baking rollout, against the fleet's head; decided again when another host was first. */
  async #commitStep(id: string, decide: (rollout: Rollout, at: { time: string; revision: number }) => RolloutStep | undefined): Promise<void> {
    const { host, table, stopping } = this.#options;
    const member = this.#options.member();
    while (!stopping()) {
      const rollout = this.known.get(id);
      if (rollout?.state !== "baking") return;
      const after = table.revision;
      const time = new Date().toISOString();
      const step = decide(rollout, { time, revision: after + 1 });
      if (!step) return;
      const at = { line: "", host, source: `rollout:${id}`, time, seq: this.#options.seq() };
      // a temporary rollout's end is due from its promotion: made in the same commit
      const expiry = rolloutExpiry(step, time);
      const records = [{ ...at, rollout: step }, ...(expiry ? [{ ...at, schedule: { made: expiry } }] : [])];
      const committed = await member.commit(after, records);
      if (committed === undefined) return;
      await member.untilRevision(committed ? after + records.length : await member.head());
      if (committed) return;
    }
  }
}
