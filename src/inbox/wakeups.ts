// What wakes the inbox's reader: file-system events are only hints (chokidar throttles and drops
// them by design: chokidar issues #383 and #601), so every hint, and a periodic check, means "read
// from the saved position to the end".
import { existsSync, watch as fsWatch } from "node:fs";
import { join } from "node:path";
import { watch, type FSWatcher } from "chokidar";
import type { Logger } from "pino";
import { INBOX_FILE, isInboxName } from "./rotation.js";

export class Wakeups {
  #dir: string;
  #log: Logger;
  #watcher: FSWatcher | undefined;
  #appends: ReturnType<typeof fsWatch> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #hinted = false;
  #closed = false;
  #wake: (() => void) | undefined;
  #whenClosed: (() => void) | undefined;

  constructor(dir: string, log: Logger) {
    this.#dir = dir;
    this.#log = log;
  }

  /** Start the periodic check, and the watch when events are used; resolves once the watch is in place. */
  async start(options: { watchEvents: boolean; pollIntervalMs: number }): Promise<void> {
    if (options.watchEvents) await this.watch();
    this.#timer = setInterval(() => this.hint(), options.pollIntervalMs);
  }

  /** Watch the directory (again: the old watch may have died with the directory). */
  async watch(): Promise<void> {
    const dir = this.#dir;
    const old = this.#watcher;
    this.#watcher = undefined;
    await old?.close();
    // chokidar's own `change` drops quick successive appends; its `raw` events are fs.watch
    // unthrottled, but come after its own bookkeeping for the event, so the append signal is
    // taken from a plain fs.watch of the directory (about 0.1 ms sooner: npm run bench)
    this.#appends?.close();
    try {
      this.#appends = fsWatch(dir, (_event, name) => {
        if (name && !isInboxName(name)) return;
        this.hint();
        if (!name || name === INBOX_FILE) void this.#watchInbox(); // created, or replaced: chokidar follows the new file
      });
      this.#appends.on("error", () => this.hint());
    } catch (error) {
      this.#log.error({ err: error }, "watching the inbox failed; the periodic check goes on");
    }
    await this.#watchInbox();
  }

  // chokidar watches the inbox's path, only while the file is there: it re-reads a watched
  // directory (an lstat per entry) at every event in it — and it watches the directory for a path
  // that is missing — while cdp's own journal appends there are many (strace: ~3 stat calls per
  // journal append). When the inbox goes, the watch goes; when it comes back, a new one follows it.
  async #watchInbox(): Promise<void> {
    const path = join(this.#dir, INBOX_FILE);
    if (this.#closed || this.#watcher || !existsSync(path)) return;
    const watcher = watch(path, { ignoreInitial: true });
    this.#watcher = watcher;
    watcher.on("raw", () => this.hint());
    watcher.on("all", (event) => {
      this.hint();
      if (event === "unlink") void this.#unwatchInbox(watcher);
    });
    watcher.on("error", (error) => this.#log.error({ err: error }, "watching the inbox failed; the periodic check goes on"));
    // the file may vanish before chokidar is ready: then it never is, and close() must not wait on it
    await new Promise<void>((resolve) => {
      watcher.once("ready", resolve);
      watcher.once("error", () => resolve());
      this.#whenClosed = resolve;
    });
  }

  async #unwatchInbox(watcher = this.#watcher): Promise<void> {
    if (!watcher || watcher !== this.#watcher) return;
    this.#watcher = undefined;
    await watcher.close();
    void this.#watchInbox(); // it may be back already
  }

  /** A read is about to cover everything up to now: hints before this are answered by it. */
  reading(): void {
    this.#hinted = false;
  }

  /** Until a hint came since `reading()` (at once if one did), or until closed. */
  async next(): Promise<void> {
    if (!this.#hinted && !this.#closed) await new Promise<void>((resolve) => (this.#wake = resolve));
  }

  hint(): void {
    this.#hinted = true;
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#whenClosed?.();
    this.hint();
    clearInterval(this.#timer);
    this.#appends?.close();
    await this.#watcher?.close();
  }
}
