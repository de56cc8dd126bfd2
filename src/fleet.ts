// The fleet's log on etcd: one ordered list of accepted changes shared by every host. cdp builds
// no consensus of its own; etcd's transactions give the order:
//   <prefix>/head          the fleet's revision (the number of the last record)
//   <prefix>/log/<rev>     one record per revision (rev zero-padded, so keys sort in order)
// A host commits records after revision R with one transaction that succeeds only if the head is
// still R; otherwise another host got there first, and the caller judges its lines again.
// Records are read back by key range (unaffected by etcd's compaction of its MVCC history) and
// then followed live with a watch.
import { Etcd3, type IOptions, type Watcher } from "etcd3";
import type { Logger } from "pino";
import type { InboxPosition } from "./inbox.js";

/** One accepted change as the fleet records it: the change line (journal grammar) and where it came from. */
export interface FleetRecord {
  revision: number;
  /** The change as a line of the grammar (`app:key:value`), decoded by each host with its own schemas. */
  line: string;
  /** The host that read it from its inbox. */
  host: string;
  /** Where it came from on that host, e.g. `cdp.new:12`. */
  source: string;
  time: string;
  /** The committing host's count of processed inbox lines and its inbox position after the line: it resumes there after a crash. */
  seq: number;
  position: InboxPosition;
}

export interface FleetOptions {
  /** etcd client URLs, e.g. `http://127.0.0.1:2379`. */
  endpoints: string[];
  /** The fleet's key prefix, e.g. `/cdp/prod`. */
  prefix: string;
  auth?: { username: string; password: string };
  /** PEM contents for TLS: the CA, and a client certificate and key if etcd asks for one. */
  tls?: { ca: Buffer; cert?: Buffer; key?: Buffer };
  log: Logger;
}

/** etcd refuses a transaction of more than 128 operations by default (--max-txn-ops). */
export const MAX_RECORDS_PER_COMMIT = 100;

const pad = (revision: number) => String(revision).padStart(12, "0");

export class FleetLog {
  #client: Etcd3;
  #head: string;
  #log: string;
  #options: FleetOptions;
  #following = new Set<{ stop(): Promise<void> }>();

  constructor(options: FleetOptions) {
    this.#options = options;
    const prefix = options.prefix.replace(/\/+$/, "");
    this.#head = `${prefix}/head`;
    this.#log = `${prefix}/log/`;
    const clientOptions: IOptions = { hosts: options.endpoints, dialTimeout: 5000 };
    if (options.auth) clientOptions.auth = options.auth;
    if (options.tls) clientOptions.credentials = { rootCertificate: options.tls.ca, certChain: options.tls.cert, privateKey: options.tls.key };
    this.#client = new Etcd3(clientOptions);
  }

  /** The fleet's revision: the number of the last committed record (0: none yet). */
  async head(): Promise<number> {
    const value = await this.#client.get(this.#head).string();
    return value === null ? 0 : Number(value);
  }

  /**
   * Append `records` as revisions after+1, after+2, … in one transaction, only if the fleet is
   * still at revision `after`. False when it is not (another host committed first).
   */
  async commit(after: number, records: Omit<FleetRecord, "revision">[]): Promise<boolean> {
    // with no records, the transaction only checks that the fleet is still at `after`
    if (records.length > MAX_RECORDS_PER_COMMIT) throw new Error(`at most ${MAX_RECORDS_PER_COMMIT} records per commit`);
    const head = after === 0 ? this.#client.if(this.#head, "Create", "==", 0) : this.#client.if(this.#head, "Value", "==", String(after));
    const puts = records.map((record, i) => this.#client.put(`${this.#log}${pad(after + i + 1)}`).value(JSON.stringify({ revision: after + i + 1, ...record })));
    const result = await (records.length === 0 ? head : head.then(this.#client.put(this.#head).value(String(after + records.length)), ...puts)).commit();
    return result.succeeded;
  }

  /** The records after revision `after`, in order, read by key (at most `limit`). */
  async recordsAfter(after: number, limit = 1000): Promise<FleetRecord[]> {
    const values = await this.#client
      .getAll()
      .inRange({ start: `${this.#log}${pad(after + 1)}`, end: `${this.#log}~` })
      .sort("Key", "Ascend")
      .limit(limit)
      .strings();
    return Object.values(values).map((value) => JSON.parse(value as string) as FleetRecord);
  }

  /**
   * Hand every record after revision `after` to `take`, in order and each once: first those
   * already committed, then live ones. A gap (a missed watch event) is filled by reading again.
   */
  async follow(after: number, take: (record: FleetRecord) => void): Promise<{ stop(): Promise<void> }> {
    let last = after; // handed to `take`
    let scheduled = after; // handed, or queued to be
    let stopped = false;
    let reading: Promise<void> = Promise.resolve();
    const readOn = () =>
      (reading = reading
        .then(async () => {
          for (let batch = await this.recordsAfter(last); batch.length > 0 && !stopped; batch = await this.recordsAfter(last)) {
            for (const record of batch) deliver(record);
          }
          scheduled = Math.max(scheduled, last);
        })
        .catch((error: unknown) => {
          if (!stopped) this.#options.log.warn({ err: error }, "reading the fleet log failed; trying again at the next event");
        }));
    const deliver = (record: FleetRecord) => {
      if (record.revision !== last + 1) return;
      last = record.revision;
      take(record);
    };
    const watcher: Watcher = await this.#client.watch().prefix(this.#log).create();
    // a transaction's records arrive together: each one after the last scheduled is queued at once
    watcher.on("put", (kv) => {
      const record = JSON.parse(kv.value!.toString()) as FleetRecord;
      if (record.revision === scheduled + 1) {
        scheduled = record.revision;
        reading = reading.then(() => deliver(record));
      } else if (record.revision > scheduled + 1) {
        void readOn();
      }
    });
    watcher.on("connected", () => void readOn()); // after a reconnect, read what the cut may have hidden
    watcher.on("error", (error) => this.#options.log.warn({ err: error }, "the fleet watch failed; reading on from the last record"));
    await readOn();
    const following = {
      stop: async () => {
        stopped = true;
        this.#following.delete(following);
        await watcher.cancel().catch(() => undefined);
        await reading;
      },
    };
    this.#following.add(following);
    return following;
  }

  /** Stop following and disconnect. */
  async close(): Promise<void> {
    await Promise.all([...this.#following].map((following) => following.stop()));
    this.#client.close();
  }
}
