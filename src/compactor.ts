// Compaction's schedule: count the change records the journal holds since it was last compacted,
// and rewrite it (journal.ts's compactJournal) once they reach the threshold, between batches (in
// a fleet: between journal appends), so that the journal is whole. Then appends go to the new file.
import type { Logger } from "pino";
import type { Files } from "./commit.js";
import { DurableFile, StorageFault } from "./durable.js";
import { compactJournal, replayJournal } from "./journal.js";
import type { Schemas } from "./schemas.js";
import type { ConfigTable } from "./table.js";
import type { AppValidator } from "./validate.js";

export interface CompactionSettings {
  /** Compact once the journal holds this many change records (0: never)… */
  after: number;
  /** …keeping the last this many as history. */
  keep: number;
  journalPath: string;
  files: Files;
  schemas: () => Schemas;
  validators: ReadonlyMap<string, readonly AppValidator[]>;
  table: ConfigTable;
  log: Logger;
}

export class Compactor {
  #settings: CompactionSettings;
  #records: number;

  constructor(settings: CompactionSettings, records: number) {
    this.#settings = settings;
    this.#records = records;
  }

  /** `count` change records were appended. */
  counted(count: number): void {
    this.#records += count;
  }

  /** Count from zero (a fleet host does so when it queues a compaction behind journal appends). */
  restart(): void {
    this.#records = 0;
  }

  get due(): boolean {
    return this.#settings.after > 0 && this.#records >= this.#settings.after;
  }

  /**
   * Rewrite the journal. A failure leaves it as it was and is tried again after as many changes
   * again; failing to reopen the new file is a StorageFault (appending to the old one would lose
   * changes), which stops cdp.
   */
  async compact(): Promise<void> {
    const { journalPath, files, keep, log, table } = this.#settings;
    try {
      const schemas = this.#settings.schemas();
      const full = await replayJournal(journalPath, schemas, { validators: this.#settings.validators, history: true });
      const { before, after } = await compactJournal(journalPath, full, schemas, keep);
      try {
        await files.journal.close();
        files.journal = await DurableFile.open(journalPath);
      } catch (error) {
        throw new StorageFault(journalPath, "reopening the compacted journal", error as NodeJS.ErrnoException);
      }
      this.#records = Math.min(this.#records, keep);
      log.info({ before, after, revision: table.revision }, "compacted the journal");
    } catch (error) {
      if (error instanceof StorageFault) throw error;
      this.#records = 0; // try again after as many changes again
      log.error({ err: error }, "compaction failed; the journal is left as it was");
    }
  }
}
