// What is due, and when: the changes in time the journal (or the fleet) holds, and the timer of
// the next. When one is due it is judged in its turn with the batches (schedule.ts) and handed to
// the run to commit, as a single host's journal or a fleet's log commits it.
import type { Logger } from "pino";
import type { SecretsKey } from "../lines/sealed.js";
import type { Schemas } from "../schemas/schemas.js";
import type { AppValidator } from "../schemas/validate.js";
import type { Scheduled } from "../store/records.js";
import type { ConfigTable } from "../store/table.js";
import { fireSchedule, type Fired } from "./schedule.js";

/** How often what is due is looked at again while the next schedule is further off. */
const CHECK_MS = 5000;

export interface ScheduleClockContext {
  table: ConfigTable;
  schemas(): Schemas;
  validators: ReadonlyMap<string, readonly AppValidator[]>;
  sealing: SecretsKey | undefined;
  seq(): number;
  stopping(): boolean;
  inTurn(task: () => Promise<void>): Promise<void>;
  fault(error: unknown): void;
  log: Logger;
  /** Commit what a due schedule fired: true once durable and applied; false when another host decided first; undefined when cdp stops. */
  commit(entry: Scheduled, fired: Fired, time: string): Promise<boolean | undefined>;
}

export class ScheduleClock {
  readonly #context: ScheduleClockContext;
  readonly #due: Map<string, Scheduled>;
  #timer: NodeJS.Timeout | undefined;
  #running = false;

  /** `due`: what the journal holds, by id, in the order they were made. */
  constructor(due: Map<string, Scheduled>, context: ScheduleClockContext) {
    [this.#due, this.#context] = [due, context];
  }

  /** What is due, by id (the batches judge a cancel against it). */
  get due(): ReadonlyMap<string, Scheduled> {
    return this.#due;
  }

  /** Soonest first. */
  list(): Scheduled[] {
    return [...this.#due.values()].sort((a, b) => Date.parse(a.at) - Date.parse(b.at));
  }

  /** Start firing: what fell due while cdp was stopped fires now, once, in order. */
  start(): void {
    this.#running = true;
    this.#arm();
  }

  stop(): void {
    this.#running = false;
    clearTimeout(this.#timer);
  }

  /** Schedules made (or replaced by a window's expiry) and ended, in order. */
  took(taken: readonly (Scheduled | { done: string })[]): void {
    for (const entry of taken) {
      if ("done" in entry) this.#due.delete(entry.done);
      else this.#due.set(entry.id, entry);
    }
    this.#arm();
  }

  /** Every schedule due, as the fleet keeps them (at join). */
  replace(all: readonly Scheduled[]): void {
    this.#due.clear();
    this.took([...all].sort((a, b) => Date.parse(a.at) - Date.parse(b.at)));
  }

  // The timer runs on the monotonic clock, what is due by the wall clock: looked at again every
  // few seconds, so a clock set forward fires what it passed; one set back only delays.
  #arm(): void {
    clearTimeout(this.#timer);
    if (!this.#running || this.#context.stopping()) return;
    const next = Math.min(...[...this.#due.values()].map((entry) => Date.parse(entry.at)));
    if (!Number.isFinite(next)) return;
    const wait = Math.min(Math.max(0, next - Date.now()), CHECK_MS);
    this.#timer = setTimeout(() => void this.#context.inTurn(() => this.#fireDue()).catch(this.#context.fault), wait);
    this.#timer.unref();
  }

  // Each schedule due, in the order of its time: judged against this moment's configuration, committed, applied.
  async #fireDue(): Promise<void> {
    const { table, log } = this.#context;
    for (const entry of this.list().filter((due) => Date.parse(due.at) <= Date.now())) {
      if (this.#context.stopping()) return;
      const time = new Date().toISOString();
      const fired = fireSchedule(entry, {
        schemas: this.#context.schemas(),
        validators: this.#context.validators,
        current: table,
        sealing: this.#context.sealing,
        revision: table.revision,
        seq: this.#context.seq(),
        time,
      });
      const committed = await this.#context.commit(entry, fired, time);
      if (committed === undefined) return;
      if (!committed) continue; // another host was first: what it decided comes back through the fleet's log
      log[fired.rejected.length > 0 ? "warn" : "info"](
        { schedule: entry.id, applied: fired.changes.length, kept: fired.markers.length, ...(fired.rejected.length ? { rejected: fired.rejected } : {}) },
        entry.restore ? "a temporary change ended" : "a scheduled change fired",
      );
      if (fired.next) this.#due.set(entry.id, fired.next);
      else this.#due.delete(entry.id);
    }
    this.#arm();
  }
}
