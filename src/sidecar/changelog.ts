// The recent history the sidecar serves (GET /v1/history), kept in memory: read from the journal
// once, on the first request (concurrent first requests share that one read), then kept up to
// date from the table as changes are applied. A request costs at most one pass over the kept
// entries, however long the journal: replaying it per request let 20 clients hold up the pipeline.
import type { Logger } from "pino";
import { replayJournal, type HistoryEntry } from "../store/journal.js";
import type { Pipeline } from "../types.js";
import type { RolloutStep } from "../fleet/rollouts.js";
import type { ChangeEvent } from "../store/table.js";

/** How many of the latest changes are kept and served. */
export const KEPT_CHANGES = 10_000;

export class RecentChanges {
  #pipeline: Pipeline;
  #log: Logger;
  #entries: HistoryEntry[] | undefined;
  #arrived: HistoryEntry[] = []; // applied while the journal is read
  #reading: Promise<HistoryEntry[]> | undefined;
  #unsubscribe: () => void;
  #versions: Map<string, number>; // each app's schema version as last heard

  constructor(pipeline: Pipeline, log: Logger) {
    this.#pipeline = pipeline;
    this.#log = log;
    this.#versions = new Map([...pipeline.schemas].map(([app, schema]) => [app, schema.version]));
    const unsubscribe = pipeline.table.subscribeAll((event) => this.#applied(event));
    pipeline.events.on("rollout", this.#stepped);
    this.#unsubscribe = () => {
      unsubscribe();
      pipeline.events.off("rollout", this.#stepped);
    };
  }

  // a fleet rollout's step that changed nothing here is an entry all the same, as the journal's history has it
  #stepped = ({ step, rollout }: RolloutStep, nothingHere: { revision: number; reason: string } | undefined) => {
    if (!nothingHere) return;
    const time = rollout.endedAt ?? (step === "staged" ? rollout.started : new Date().toISOString());
    this.#keep({
      revision: nothingHere.revision,
      time,
      source: `rollout:${rollout.id}`,
      app: rollout.app,
      key: "",
      value: undefined,
      previous: undefined,
      secret: false,
      record: "",
      reason: nothingHere.reason,
      step: { rollout: rollout.id, step },
    });
  };

  /** The kept changes, oldest first. */
  async entries(): Promise<readonly HistoryEntry[]> {
    if (this.#entries) return this.#entries;
    this.#reading ??= this.#read().finally(() => (this.#reading = undefined));
    return this.#reading;
  }

  close(): void {
    this.#unsubscribe();
  }

  async #read(): Promise<HistoryEntry[]> {
    const { journalPath, schemas, validators } = this.#pipeline;
    const started = performance.now();
    const state = await replayJournal(journalPath, schemas, { validators, history: true });
    const entries = state.history.slice(-KEPT_CHANGES);
    const last = entries.at(-1)?.revision ?? 0;
    entries.push(...this.#arrived.filter((entry) => entry.revision > last));
    this.#arrived = [];
    this.#entries = entries;
    this.#log.info(
      { entries: entries.length, ms: Math.round(performance.now() - started) },
      "read the journal's history once for the sidecar; kept up to date from here on",
    );
    return entries;
  }

  #applied(event: ChangeEvent): void {
    const entries = this.#entries ?? this.#arrived;
    const known = this.#versions.get(event.app);
    if (event.version !== undefined) this.#versions.set(event.app, event.version);
    if (event.source.startsWith("schema:")) {
      // a schema upgrade's revision has no change record; a migration is one entry, as the journal's history has it
      if (known !== undefined && event.version !== undefined && known !== event.version) {
        entries.push({
          revision: event.revision,
          time: event.time,
          source: event.source,
          app: event.app,
          key: "",
          value: undefined,
          previous: undefined,
          secret: false,
          record: "",
          migration: { from: known, to: event.version },
        });
      }
      return;
    }
    const info = this.#pipeline.schemas.get(event.app)?.key(event.key.split("."));
    const { revision, app, key, value, previous, source, time, reason, by } = event;
    const entry: HistoryEntry = { revision, time, source, app, key, value, previous, secret: typeof info !== "object" || info.secret, record: "" };
    if (reason !== undefined) entry.reason = reason;
    if (by !== undefined) entry.by = by;
    this.#keep(entry);
  }

  #keep(entry: HistoryEntry): void {
    const entries = this.#entries ?? this.#arrived;
    entries.push(entry);
    if (entries.length > 2 * KEPT_CHANGES) entries.splice(0, entries.length - KEPT_CHANGES);
  }
}
