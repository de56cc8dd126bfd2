// The inbox's supervision limits: an outage that lasts too long, or too many outages within a
// window, stop cdp (exit 3) so that a supervisor restarts it; shorter ones are waited out.
import type { Logger } from "pino";
import { CdpError } from "../errors.js";

export interface OutageLimits {
  /** An outage longer than this stops cdp. */
  maxOutageMs: number;
  /** More outages than this within `outageWindowMs` stop cdp. */
  maxOutages: number;
  outageWindowMs: number;
}

export class Outages {
  #limits: OutageLimits;
  #path: string;
  #log: Logger;
  #since: number | undefined;
  #recent: number[] = []; // start times of recent outages
  #count = 0;
  /** Set once a limit is passed: cdp stops with it. */
  failure: CdpError | undefined;

  constructor(limits: OutageLimits, path: string, log: Logger) {
    this.#limits = limits;
    this.#path = path;
    this.#log = log;
  }

  /** How many outages there were since start. */
  get count(): number {
    return this.#count;
  }

  /** Why the inbox cannot be read right now, or undefined while it can. */
  get current(): string | undefined {
    return this.#since === undefined ? undefined : `the inbox ${this.#path} has been unavailable since ${new Date(this.#since).toISOString()}`;
  }

  /** A read failed: an outage begins or goes on; past a limit, `failure` is set. */
  failed(error: NodeJS.ErrnoException): void {
    const { maxOutageMs, maxOutages, outageWindowMs } = this.#limits;
    const now = Date.now();
    if (this.#since === undefined) {
      this.#since = now;
      this.#recent = [...this.#recent.filter((start) => now - start < outageWindowMs), now];
      this.#count++;
      this.#log.warn({ err: error, path: this.#path, outages: this.#recent.length }, "the inbox is unavailable; retrying each second");
    }
    const cause = error.code && !error.message.startsWith(`${error.code}:`) ? `${error.code}: ${error.message}` : error.message; // Node's own messages start with their code
    if (this.#recent.length > maxOutages) {
      this.failure = new CdpError("inbox", `the inbox ${this.#path} was unavailable ${this.#recent.length} times within ${outageWindowMs / 1000} s (${cause})`);
    } else if (now - this.#since > maxOutageMs) {
      this.failure = new CdpError("inbox", `the inbox ${this.#path} has been unavailable for more than ${maxOutageMs / 1000} s (${cause})`);
    }
  }

  /** A read went through: true when that ends an outage. */
  ended(): boolean {
    if (this.#since === undefined) return false;
    this.#log.info({ path: this.#path, seconds: (Date.now() - this.#since) / 1000 }, "the inbox is available again");
    this.#since = undefined;
    return true;
  }
}
