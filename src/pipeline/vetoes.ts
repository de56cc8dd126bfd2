// A change is tentative for a while after it is applied: a subscriber that finds it unhealthy may
// veto it, and it is then reverted through the same checks as any change (validated, journaled
// with the reason, announced), taking its turn with the batches.
import { isDeepStrictEqual } from "node:util";
import type { Logger } from "pino";
import { encodeChange, vetoRecord } from "../store/journal.js";
import { revertRecord } from "../store/records.js";
import { parseLine } from "../lines/parse.js";
import type { KeyInfo, Schemas } from "../schemas/schemas.js";
import type { ConfigTable } from "../store/table.js";
import { validateChange, type AppValidator, type ParsedChange, type ValidChange } from "../schemas/validate.js";
import { getIn, PendingConfigs, type AppConfig } from "../lines/values.js";

export interface VetoSettings {
  windowMs: number;
  table: ConfigTable;
  schemas: () => Schemas;
  validators: ReadonlyMap<string, readonly AppValidator[]>;
  /** The count of processed lines, for the revert's record. */
  seq: () => number;
  /** Append to the journal durably (false: cdp stopped first). */
  journal: (text: string) => Promise<boolean>;
  /** Run a revert in its turn with the batches. */
  inTurn: (task: () => Promise<void>) => Promise<void>;
  stopping: () => boolean;
  fault: (error: unknown) => void;
  /** A revert was journaled and applied. */
  reverted: () => void;
  log: Logger;
}

export class Vetoes {
  #settings: VetoSettings;

  constructor(settings: VetoSettings) {
    this.#settings = settings;
  }

  /** What a subscriber's `veto(reason)` does for this change: true when it will be (or was) reverted. */
  tentative(change: ValidChange, revision: number): (reason: string) => boolean {
    return this.window((reason) => this.#revert(change, revision, reason));
  }

  /** A veto for anything tentative (a change, a migration): the first within the window runs `undo`, in its turn. */
  window(undo: (reason: string) => Promise<void>): (reason: string) => boolean {
    const deadline = Date.now() + this.#settings.windowMs;
    let vetoed = false;
    return (reason: string): boolean => {
      if (vetoed) return true;
      if (Date.now() > deadline || this.#settings.stopping()) return false;
      vetoed = true;
      this.#settings.inTurn(() => undo(String(reason).replace(/[\r\n]+/g, " "))).catch(this.#settings.fault);
      return true;
    };
  }

  /**
   * Take keys of an app back to their values in `config`, each a change record with its reason,
   * checked like any change: what a render target does when its service refuses a configuration.
   * A key whose value is no longer the one judged (`judged`) has changed since: left as it is.
   * The revision after, or undefined when nothing was changed.
   */
  async revertApp(app: string, config: AppConfig, reasons: ReadonlyMap<string, string>, judged: AppConfig, source: string): Promise<number | undefined> {
    const { table, validators, log } = this.#settings;
    const schemas = this.#settings.schemas();
    const schema = schemas.get(app);
    if (!schema) return undefined;
    const time = new Date().toISOString();
    const taken: { key: string; topValue: unknown; revision: number; reason: string }[] = [];
    const state = new PendingConfigs(table);
    let text = "";
    for (const [key, reason] of reasons) {
      const value = config[key];
      if (isDeepStrictEqual(value, state.valueOf(app, key))) continue;
      if (!isDeepStrictEqual(table.valueOf(app, key), judged[key])) {
        log.warn({ app, key, reason }, "not taken back: the key has changed since the service refused it");
        continue;
      }
      if (value === undefined) {
        log.warn({ app, key, reason }, "cannot take back a key that had no value before: left as it is");
        continue;
      }
      const line = encodeChange(app, key, value, schema.key([key]) as KeyInfo);
      const verdict = validateChange({ schemas, validators, current: state }, parseLine(line) as ParsedChange);
      if (!verdict.ok) {
        log.warn({ app, key, reason, refused: verdict.reason }, "cannot take a key back: the schemas refuse its earlier value");
        continue;
      }
      state.set(app, key, verdict.change.topValue);
      const revision = table.revision + taken.length + 1;
      taken.push({ key, topValue: verdict.change.topValue, revision, reason });
      text += revertRecord({ revision, seq: this.#settings.seq(), time, source, reason }, line);
    }
    if (taken.length === 0 || !(await this.#settings.journal(text))) return undefined;
    for (const { key, topValue, revision, reason } of taken) table.apply({ app, key, topValue, revision, source, time, reason });
    for (let i = 0; i < taken.length; i++) this.#settings.reverted();
    log.warn({ app, keys: taken.map(({ key }) => key), reasons: taken.map(({ reason }) => reason), revision: table.revision }, "configuration taken back");
    return table.revision;
  }

  async #revert(change: ValidChange, vetoed: number, reason: string): Promise<void> {
    const { table, validators, log } = this.#settings;
    const schemas = this.#settings.schemas();
    const fields = { app: change.app, key: change.key, vetoed, reason };
    if (!isDeepStrictEqual(table.get(change.app, change.key), change.value)) return log.warn(fields, "veto not applied: the key has changed since");
    const previous = change.previous ?? getIn(schemas.get(change.app)?.defaults, change.path);
    if (previous === undefined) return log.warn(fields, "veto not applied: the key had no value before and has no default");
    const line = encodeChange(change.app, change.key, previous, schemas.get(change.app)!.key(change.path) as KeyInfo);
    const verdict = validateChange({ schemas, validators, current: table }, parseLine(line) as ParsedChange);
    if (!verdict.ok) return log.warn({ ...fields, refused: verdict.reason }, "veto not applied: the revert would be rejected");
    const time = new Date().toISOString();
    const revision = table.revision + 1;
    if (!(await this.#settings.journal(vetoRecord({ revision, seq: this.#settings.seq(), time, vetoed, reason }, line)))) return;
    table.apply({ app: change.app, key: change.key, topValue: verdict.change.topValue, revision, source: `veto:${vetoed}`, time, reason });
    this.#settings.reverted();
    log.warn({ ...fields, revision }, "change vetoed and reverted");
  }
}
