// Work that must not overlap (batches, schema upgrades, reverts; journal appends and compaction)
// takes turns: each task starts when the one before it has settled.
export class Turns {
  #last: Promise<unknown> = Promise.resolve();

  /** Run `task` after every task queued before it; its result (or failure) is the caller's. */
  run<T>(task: () => Promise<T>): Promise<T> {
    const done = this.#last.then(task);
    this.#last = done.catch(() => undefined);
    return done;
  }

  /** Settles when every task queued so far has. */
  settled(): Promise<unknown> {
    return this.#last;
  }
}
