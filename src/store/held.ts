// A write that fails (disk full, file too large, read-only) is retried with backoff: the batch
// is held, neither applied nor skipped, until the write goes through or cdp stops. The one place
// where failing writes are waited out; `reason` says why while they are.
import type { Logger } from "pino";
import { WriteFailed, type DurableFile } from "./durable.js";

export class HeldWrites {
  /** Why writes are failing, while they are (or a fleet's reason to hold them). */
  reason: string | undefined;
  #log: Logger;
  #stopping: () => boolean;

  constructor(log: Logger, stopping: () => boolean) {
    this.#log = log;
    this.#stopping = stopping;
  }

  /** Append durably, retrying while the write fails; false when cdp stops first. */
  async append(file: DurableFile, text: string): Promise<boolean> {
    const sync = await this.appendUnsynced(file, text);
    if (sync) await sync();
    return sync !== false;
  }

  /** Append to the page cache, retrying while the write fails; its fsync to await, or false when cdp stops first. */
  async appendUnsynced(file: DurableFile, text: string): Promise<(() => Promise<void>) | false> {
    for (let delay = 100; ; delay = Math.min(delay * 2, 5000)) {
      try {
        const sync = await file.appendUnsynced(text);
        this.reason = undefined;
        return sync;
      } catch (error) {
        if (!(error instanceof WriteFailed)) throw error;
        this.reason = `cannot write ${error.path}: ${error.cause.message}`;
        this.#log.error({ err: error.cause, path: error.path, retryInMs: delay }, "cannot write: the batch is held and tried again");
      }
      await new Promise((resolve) => setTimeout(resolve, delay));
      if (this.#stopping()) return false;
    }
  }
}
