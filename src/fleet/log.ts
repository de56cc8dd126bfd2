// The fleet's log on etcd: one ordered list of accepted changes shared by every host. cdp builds
// no consensus of its own; etcd's transactions give the order:
//   <prefix>/head          the fleet's revision (the number of the last record)
//   <prefix>/log/<rev>     one commit's records: the first, numbered rev (zero-padded, so keys
//                         sort in order), with the rest of the commit in its `then` (one etcd
//                         key per commit, not per record: etcd's cost is per key written), or a
//                         large `then` `deflated` once every host reads that
//   <prefix>/rollouts/<id> each rollout's current state (written with the record of its last step)
//   <prefix>/hosts/<name>  what each host says of itself (and the log formats it reads), on its lease
//   <prefix>/state        the fleet's configuration at some revision S (change lines), once the
//                         records up to S minus a kept tail were trimmed; a state over 1 MiB keeps
//                         its lines in parts, <prefix>/state-parts/<S>-<id>/<i> (etcd takes 1.5 MiB per request)
// A host commits records after revision R with one transaction that succeeds only if the head is
// still R; otherwise another host got there first, and the caller judges its lines again.
// Records are read back by key range (unaffected by etcd's compaction of its MVCC history) and
// then followed live with a watch; a host that was away past the trimmed records starts again
// from the state.
import { randomBytes } from "node:crypto";
import { deflateRawSync, inflateRawSync } from "node:zlib";
import type { Logger } from "pino";
import { Etcd, prefixEnd, type Operation } from "./etcd.js";
import type { InboxPosition } from "../inbox/inbox.js";
import type { Scheduled, ScheduleStep, SchemaEntries } from "../store/records.js";
import type { HostStatus } from "./hosts.js";
import type { Rollout, RolloutStep } from "./rollouts.js";

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
  /** Absent for a decision no inbox line made (a rollout's clock). */
  position?: InboxPosition;
  /** A rollout's step instead of a change (`line` is empty). */
  rollout?: RolloutStep;
  /** A migration instead of a change (`line` is empty): apps moved to other schema versions, as a host's journal records them. */
  migration?: SchemaEntries;
  /** Who made the change and why (`# by:`, `# reason:` before its line): every host's history says so. */
  by?: string;
  reason?: string;
  /** A change in time made or done instead of a change (`line` is empty). */
  schedule?: ScheduleStep;
}

/** How long a quiet watch is trusted before the head is read to see whether it is stuck. */
const QUIET_WATCH_MS = 5000;

/** How long a host's status outlives its last keepalive (a host killed is gone from the list after it). */
export const HOST_TTL_SECONDS = 5;

/** The fleet's whole configuration at one revision: one change line per top-level key that has a value. */
export interface FleetSnapshot {
  revision: number;
  lines: string[];
  time: string;
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

/**
 * How much one commit may hold: etcd refuses a request of more than 1.5 MiB by default
 * (--max-request-bytes), and a record adds ~200 bytes to its line.
 */
export const MAX_RECORDS_PER_COMMIT = 1000;
export const MAX_LINE_BYTES_PER_COMMIT = 384 << 10; // JSON escapes may double a line

/** How many ended rollouts a trim keeps in etcd: as many as a host shows (FleetRollouts.KEPT). */
export const ENDED_ROLLOUTS_KEPT = 20;

/** etcd refuses a request over --max-request-bytes (1.5 MiB by default): a commit, or a part of a saved state, stays under this. */
const MAX_COMMIT_BYTES = 1 << 20;

/** A saved state whose lines are in parts beside it, under `generation` (a key prefix). */
interface StateInParts {
  revision: number;
  time: string;
  parts: number;
  generation: string;
}

/** Lines in parts of at most `bytes` once JSON-encoded (a line is at most a fleet's --max-line-bytes, escaped: under 1 MiB). */
function inParts(lines: string[], bytes: number): string[][] {
  const parts: string[][] = [[]];
  let size = 2;
  for (const line of lines) {
    const encoded = Buffer.byteLength(JSON.stringify(line)) + 1;
    if (size + encoded > bytes && parts.at(-1)!.length > 0) {
      parts.push([]);
      size = 2;
    }
    parts.at(-1)!.push(line);
    size += encoded;
  }
  return parts;
}

/**
 * What a refused commit saw: the fleet's head; and when the refused commit may be this very one
 * sent before (`mayBeOurs`), the record at the revision it wanted (absent when no commit starts
 * there, e.g. trimmed).
 */
export interface Refusal {
  head: number;
  mayBeOurs?: boolean;
  first?: FleetRecord;
}

/** A commit of several records too large for one etcd request (their lines, JSON-escaped, swell): commit them in smaller parts. */
export class CommitTooLarge extends Error {}

/**
 * One commit as stored: its first record whole, then the rest in `then`, each without what
 * follows from the record before it (a burst's records are a third of the bytes: etcd, its gateway and
 * every host's JSON reading cost per byte). A later record leaves out its revision (always the
 * one before's + 1); its host, time and inbox file when the same; its seq and inbox line when
 * one more; its source when it names that line of the same file.
 */
type LaterRecord = Partial<Omit<FleetRecord, "position">> & { position?: Partial<InboxPosition> };
type StoredCommit = FleetRecord & { then?: LaterRecord[]; deflated?: string };

/**
 * What this version reads beyond the first format, said in each host's status: a host writes a
 * commit `deflated` only once every host says it reads it (one of an earlier version reads the
 * first record and waits, naming the revisions it misses).
 */
export const READS = ["deflated"];

/**
 * A `then` of this many bytes or more is stored `deflated` (raw DEFLATE, base64) where every host
 * reads it: a burst's commit of 1,000 records goes from ~50 KB to ~6 KB, and etcd's cost per record
 * (its gateway's JSON, raft, the WAL, each watcher's copy) halved in the fleet bench. A commit of
 * one change stays plain: nothing to gain.
 */
const DEFLATE_FROM = 4096;

const sourceFile = (source: string) => source.slice(0, source.lastIndexOf(":"));

/** One commit's value; `deflate`: its `then` deflated when large (every host reads it). */
export function packCommit(records: FleetRecord[], deflate = false): string {
  const [first, ...rest] = records;
  if (rest.length === 0) return JSON.stringify(first);
  const then: LaterRecord[] = [];
  let before = first!;
  let named = sourceFile(before.source); // the file the last source written out names
  for (const record of rest) {
    const later: LaterRecord = {};
    if (record.line !== "") later.line = record.line; // a rollout's step or a migration has no line
    if (record.host !== before.host) later.host = record.host;
    if (record.time !== before.time) later.time = record.time;
    if (record.seq !== before.seq + 1) later.seq = record.seq;
    const { position } = record;
    if (position) {
      const { file, offset, line, check } = position;
      const sameFile = before.position?.file === file;
      later.position = sameFile ? { offset } : { file, offset };
      if (!sameFile || line !== before.position!.line + 1) later.position.line = line;
      if (check !== undefined) later.position.check = check;
    }
    if (!position || record.source !== `${named}:${position.line}`) {
      later.source = record.source;
      named = sourceFile(record.source);
    }
    if (record.rollout !== undefined) later.rollout = record.rollout;
    if (record.migration !== undefined) later.migration = record.migration;
    if (record.schedule !== undefined) later.schedule = record.schedule;
    if (record.by !== undefined) later.by = record.by;
    if (record.reason !== undefined) later.reason = record.reason;
    then.push(later);
    before = record;
  }
  const plain = JSON.stringify(then); // measured for the threshold, and written as it is: `then` is serialised once
  if (!deflate || plain.length < DEFLATE_FROM) return `${JSON.stringify(first).slice(0, -1)},"then":${plain}}`;
  return JSON.stringify({ ...first, deflated: deflateRawSync(plain, { level: 1 }).toString("base64") });
}

export function unpackCommit(value: string): FleetRecord[] {
  const { then: plain, deflated, ...first } = JSON.parse(value) as StoredCommit;
  const then = deflated === undefined ? plain : (JSON.parse(inflateRawSync(Buffer.from(deflated, "base64")).toString()) as LaterRecord[]);
  if (!then) return [first];
  const records: FleetRecord[] = [first];
  let before: FleetRecord = first;
  let named = sourceFile(first.source);
  // filled in place: a copy of each record cost more than the rest of reading it
  for (const later of then) {
    const record = later as FleetRecord;
    record.revision = before.revision + 1;
    record.line ??= "";
    record.host ??= before.host;
    record.time ??= before.time;
    record.seq ??= before.seq + 1;
    const position = later.position;
    if (position) {
      position.file ??= before.position!.file;
      position.line ??= before.position!.line + 1;
    }
    if (record.source === undefined) record.source = `${named}:${position!.line}`;
    else named = sourceFile(record.source);
    records.push(record);
    before = record;
  }
  return records;
}

const pad = (revision: number) => String(revision).padStart(12, "0");

export class FleetLog {
  #client: Etcd;
  #head: string;
  #log: string;
  #state: string;
  #stateRevision: string;
  #stateParts: string;
  #hosts: string;
  #rollouts: string;
  #secretsKey: string;
  #schedules: string;
  #lease: Promise<string> | undefined;
  #keepingAlive: NodeJS.Timeout | undefined;
  #options: FleetOptions;
  #following = new Set<{ stop(): Promise<void> }>();
  #deflating: { at: number; answer: Promise<boolean> } | undefined;

  constructor(options: FleetOptions) {
    this.#options = options;
    const prefix = options.prefix.replace(/\/+$/, "");
    this.#head = `${prefix}/head`;
    this.#log = `${prefix}/log/`;
    this.#state = `${prefix}/state`;
    this.#stateRevision = `${prefix}/state-rev`;
    this.#stateParts = `${prefix}/state-parts/`;
    this.#hosts = `${prefix}/hosts/`;
    this.#rollouts = `${prefix}/rollouts/`;
    this.#secretsKey = `${prefix}/secrets-key`;
    this.#schedules = `${prefix}/schedules/`;
    this.#client = new Etcd({ endpoints: options.endpoints, auth: options.auth, tls: options.tls });
  }

  /**
   * The id of the key the fleet's secret values are sealed with (never the key): the first host
   * that has a key records its id; every host is told the fleet's.
   */
  async secretsKey(id: string | undefined): Promise<string | undefined> {
    if (id !== undefined) await this.#client.txn([{ key: this.#secretsKey, absent: true }], [{ put: this.#secretsKey, value: id }]);
    return await this.#client.get(this.#secretsKey);
  }

  /** The fleet's revision: the number of the last committed record (0: none yet). */
  async head(): Promise<number> {
    const value = await this.#client.get(this.#head);
    return value === undefined ? 0 : Number(value);
  }

  /**
   * Append `records` as revisions after+1, after+2, … in one transaction, only if the fleet is
   * still at revision `after`. False when it is not (another host committed first).
   */
  async commit(after: number, records: Omit<FleetRecord, "revision">[]): Promise<boolean> {
    return (await this.commitOrRefusal(after, records)) === true;
  }

  /**
   * `commit`, and when the fleet is no longer at `after`, what the same transaction saw instead:
   * the head (a lost race costs one round trip); and when this commit was sent before (`sentBefore`,
   * or the client sent it again after losing an answer), the first record committed after `after`,
   * to tell whether it is this very commit. Only then: that record's commit is a whole
   * transaction's worth of bytes, for etcd to send and the host to read at every lost race.
   */
  async commitOrRefusal(after: number, records: Omit<FleetRecord, "revision">[], sentBefore = false): Promise<true | Refusal> {
    // with no records, the transaction only checks that the fleet is still at `after`
    if (records.length > MAX_RECORDS_PER_COMMIT) throw new Error(`at most ${MAX_RECORDS_PER_COMMIT} records per commit`);
    const head = after === 0 ? { key: this.#head, absent: true as const } : { key: this.#head, value: String(after) };
    // a host of an earlier version reads the first record and waits, naming the revisions it misses
    const deflate = records.length > 1 && (await this.#everyHostReadsDeflated());
    const value =
      records.length === 0
        ? ""
        : packCommit(
            records.map((record, i) => ({ revision: after + i + 1, ...record })),
            deflate,
          );
    if (records.length > 1 && Buffer.byteLength(value) > MAX_COMMIT_BYTES)
      throw new CommitTooLarge(`a commit of ${records.length} records takes ${Buffer.byteLength(value)} bytes`);
    const puts: Operation[] =
      records.length === 0
        ? []
        : [
            { put: this.#head, value: String(after + records.length) },
            { put: `${this.#log}${pad(after + 1)}`, value },
          ];
    // a rollout's state moves with the record of its step, in the same transaction
    for (const { rollout } of records) if (rollout) puts.push({ put: `${this.#rollouts}${rollout.rollout.id}`, value: JSON.stringify(rollout.rollout) });
    // what is due is kept beside the log (a host that joins after a trim still knows it), moved with its record
    for (const { schedule } of records) {
      if (schedule && "made" in schedule) puts.push({ put: `${this.#schedules}${schedule.made.id}`, value: JSON.stringify(schedule.made) });
      if (schedule && "done" in schedule) puts.push({ delete: `${this.#schedules}${schedule.done.id}` });
    }
    const firstKey = `${this.#log}${pad(after + 1)}`;
    const result = await this.#client.txn([head], puts, sentBefore ? [{ get: this.#head }, { get: firstKey }] : [{ get: this.#head }]);
    if (result.succeeded) return true;
    const [headKv, firstKv] = result.got;
    const fleetHead = headKv?.value ? Number(headKv.value) : 0;
    if (!sentBefore && !result.resent) return { head: fleetHead };
    const stored = sentBefore ? firstKv?.value : await this.#client.get(firstKey);
    const taken = stored ? unpackCommit(stored)[0] : undefined;
    return { head: fleetHead, mayBeOurs: true, ...(taken ? { first: taken } : {}) };
  }

  /** The fleet's configuration as last saved by a trim, if any. */
  async snapshot(): Promise<FleetSnapshot | undefined> {
    for (let before: string | undefined; ; ) {
      const value = await this.#client.get(this.#state);
      if (value === undefined) return undefined;
      const saved = JSON.parse(value) as FleetSnapshot | StateInParts;
      if (!("parts" in saved)) return saved;
      const parts = await this.#client.range(saved.generation, { end: prefixEnd(saved.generation) });
      if (parts.length === saved.parts)
        return { revision: saved.revision, time: saved.time, lines: parts.flatMap((part) => JSON.parse(part.value) as string[]) };
      // a newer trim replaced this state (and deleted its parts) as they were read: read the newer one
      if (value === before) throw new Error(`the fleet's saved state at revision ${saved.revision} misses parts (${parts.length} of ${saved.parts})`);
      before = value;
    }
  }

  /**
   * Save `snapshot` (the state at its revision) and delete the records before revision `keepFrom`,
   * unless a newer snapshot is saved already (two hosts may trim at once). So the log in etcd
   * stays bounded; a host behind `keepFrom` starts again from the snapshot. Rollouts that ended
   * before `keepFrom` go too, but for the most recent ones (`cdp rollout status` on a new host).
   */
  async trim(snapshot: FleetSnapshot, keepFrom: number): Promise<boolean> {
    const parts = inParts(snapshot.lines, MAX_COMMIT_BYTES);
    if (parts.length === 1) return this.#saveState(snapshot.revision, JSON.stringify(snapshot), keepFrom);
    // a state too large for one request: its lines in parts first, under a name of this attempt's
    // own; deleted unless the state is saved (or by the next trim that is, should this host die)
    const generation = `${this.#stateParts}${pad(snapshot.revision)}-${randomBytes(4).toString("hex")}/`;
    let saved = false;
    try {
      for (const [i, part] of parts.entries()) await this.#client.put(`${generation}${pad(i)}`, JSON.stringify(part));
      const stored: StateInParts = { revision: snapshot.revision, time: snapshot.time, parts: parts.length, generation };
      saved = await this.#saveState(snapshot.revision, JSON.stringify(stored), keepFrom, generation);
      return saved;
    } finally {
      if (!saved) await this.#client.txn([], [{ delete: generation, end: prefixEnd(generation) }]).catch(() => undefined);
    }
  }

  /** Save a state (`stored`: whole, or naming the `generation` of its parts) unless a newer one is saved; trim the log before `keepFrom`. */
  async #saveState(revision: number, stored: string, keepFrom: number, generation = `${this.#stateParts}${pad(revision)}`): Promise<boolean> {
    // two trims at once (two hosts, or two of one host's batches): the one with the newer state wins,
    // whichever comes first, so a failed comparison is looked at again
    for (;;) {
      const saved = await this.#client.get(this.#stateRevision);
      if (saved !== undefined && saved >= pad(revision)) return false;
      // the commit that holds revision keepFrom is kept whole
      const keptFrom = (await this.#commitKeyAt(keepFrom)) ?? `${this.#log}${pad(keepFrom)}`;
      const ended = (await this.rollouts()).filter((rollout) => rollout.ended !== undefined && rollout.ended < keepFrom).sort((a, b) => b.ended! - a.ended!);
      const forgotten = ended.slice(ENDED_ROLLOUTS_KEPT, ENDED_ROLLOUTS_KEPT + 100).map(({ id }) => ({ delete: `${this.#rollouts}${id}` }));
      const unchanged = saved === undefined ? { key: this.#stateRevision, absent: true as const } : { key: this.#stateRevision, value: saved };
      const result = await this.#client.txn(
        [unchanged],
        [
          { put: this.#state, value: stored },
          { put: this.#stateRevision, value: pad(revision) },
          { delete: this.#log, end: keptFrom },
          { delete: this.#stateParts, end: generation }, // the parts of older states
          ...forgotten, // at most 100: a transaction takes 128 operations
        ],
      );
      if (result.succeeded) return true;
    }
  }

  /** The records after revision `after`, in order, read by key (those of at most `commits` commits). */
  async recordsAfter(after: number, commits = 100): Promise<FleetRecord[]> {
    const start = (await this.#commitKeyAt(after + 1)) ?? `${this.#log}${pad(after + 1)}`;
    const commitsRead = await this.#client.range(start, { end: `${this.#log}~`, order: "ASCEND", limit: commits });
    return commitsRead.flatMap(({ value }) => unpackCommit(value)).filter((record) => record.revision > after);
  }

  /** The key of the commit that holds `revision`, if it is still in the log. */
  async #commitKeyAt(revision: number): Promise<string | undefined> {
    const [last] = await this.#client.range(this.#log, { end: `${this.#log}${pad(revision + 1)}`, order: "DESCEND", limit: 1, keysOnly: true });
    return last?.key;
  }

  /**
   * Hand every record after revision `after` to `take`, in order and each once: first those
   * already committed, then live ones. A gap (a missed watch event) is filled by reading again.
   */
  async follow(after: number, take: (item: FleetRecord | FleetSnapshot) => void): Promise<{ stop(): Promise<void> }> {
    let last = after; // handed to `take`
    let scheduled = after; // handed, or queued to be
    let stopped = false;
    let reading: Promise<void> = Promise.resolve();
    const readOn = () =>
      (reading = reading
        .then(async () => {
          for (let batch = await this.recordsAfter(last); batch.length > 0 && !stopped; batch = await this.recordsAfter(last)) {
            if (batch[0]!.revision > last + 1) await restartFromSnapshot(batch[0]!.revision);
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
    // the records after `last` were trimmed away: the snapshot that replaced them comes first
    const restartFromSnapshot = async (first: number) => {
      const snapshot = await this.snapshot();
      if (!snapshot || snapshot.revision < first - 1 || snapshot.revision <= last) {
        throw new Error(`the fleet's log misses revisions ${last + 1} to ${first - 1} and holds no state that covers them`);
      }
      last = snapshot.revision;
      take(snapshot);
    };
    // a commit that follows the last scheduled is queued at once; the commits of one watch
    // response are handed over together (the member journals them with one fsync)
    let arriving: FleetRecord[] | undefined;
    let heard = Date.now(); // the watch's last sign of life
    const watch = await this.#client.watch(this.#log, prefixEnd(this.#log), {
      put: (kv) => {
        heard = Date.now();
        const records = unpackCommit(kv.value);
        const first = records[0]!.revision;
        if (first === scheduled + 1) {
          scheduled = records.at(-1)!.revision;
          if (!arriving) {
            const handed = (arriving = []);
            reading = reading.then(() => {
              arriving = undefined;
              handed.forEach(deliver);
            });
          }
          arriving.push(...records);
        } else if (first > scheduled + 1) {
          void readOn();
        }
      },
      connected: () => {
        heard = Date.now();
        void readOn(); // after a reconnect, read what the cut may have hidden
      },
      error: (error) => this.#options.log.warn({ err: error }, "the fleet watch failed; reading on from the last record"),
    });
    // a member that hangs (stopped, a stuck disk) keeps its connections open and says nothing: when
    // the watch has been quiet a while, the head is read (from another member if need be), and a
    // head past what the watch brought moves the watch to the next member
    let checking = false;
    const watchdog = setInterval(() => {
      if (checking || stopped || Date.now() - heard < QUIET_WATCH_MS) return;
      checking = true;
      this.head()
        .then((head) => {
          heard = Date.now();
          if (head > scheduled && !stopped) {
            watch.reopen(`the fleet's head is at ${head}, but the watch brought nothing after ${scheduled} for ${QUIET_WATCH_MS / 1000} s`);
            void readOn();
          }
        })
        .catch(() => undefined) // etcd unreachable: commits say so
        .finally(() => (checking = false));
    }, QUIET_WATCH_MS).unref();
    await readOn();
    const following = {
      stop: async () => {
        stopped = true;
        clearInterval(watchdog);
        this.#following.delete(following);
        watch.cancel();
        await reading;
      },
    };
    this.#following.add(following);
    return following;
  }

  /** Whether every host says it reads deflated commits: asked of etcd at most every 5 s (a host that joins says so within 2 s). */
  #everyHostReadsDeflated(): Promise<boolean> {
    const now = Date.now();
    if (this.#deflating && now - this.#deflating.at < 5000) return this.#deflating.answer;
    const answer = this.hosts().then(
      (hosts) => hosts.every((host) => host.reads?.includes("deflated")),
      () => false, // etcd unreachable: the commit will say so
    );
    this.#deflating = { at: now, answer };
    return answer;
  }

  /** Say how this host is, on its lease (granted at the first call, kept alive, granted again if lost). */
  async announce(status: HostStatus): Promise<void> {
    const lease = (this.#lease ??= this.#grantLease());
    try {
      await this.#client.put(`${this.#hosts}${status.host}`, JSON.stringify({ ...status, reads: READS }), await lease);
    } catch (error) {
      if (this.#lease === lease) this.#lease = undefined; // granted again at the next call
      throw error;
    }
  }

  /** A lease for this host's status, renewed a few times per time to live; forgotten once etcd lets it lapse. */
  async #grantLease(): Promise<string> {
    const id = await this.#client.grant(HOST_TTL_SECONDS);
    clearInterval(this.#keepingAlive);
    let renewed = Date.now();
    const lost = () => {
      clearInterval(this.#keepingAlive);
      this.#lease = undefined;
    };
    this.#keepingAlive = setInterval(
      () => {
        this.#client.keepAlive(id).then(
          (left) => (left > 0 ? (renewed = Date.now()) : lost()),
          () => Date.now() - renewed > HOST_TTL_SECONDS * 1000 && lost(),
        );
      },
      (HOST_TTL_SECONDS * 1000) / 3,
    ).unref();
    return id;
  }

  /** The hosts that say how they are, by name. */
  async hosts(): Promise<HostStatus[]> {
    const values = await this.#client.range(this.#hosts, { end: prefixEnd(this.#hosts) });
    return values.map(({ value }) => JSON.parse(value) as HostStatus).sort((a, b) => a.host.localeCompare(b.host));
  }

  /** Every rollout's current state. */
  async rollouts(): Promise<Rollout[]> {
    const values = await this.#client.range(this.#rollouts, { end: prefixEnd(this.#rollouts) });
    return values.map(({ value }) => JSON.parse(value) as Rollout);
  }

  /** The fleet's changes in time still due. */
  async schedules(): Promise<Scheduled[]> {
    const values = await this.#client.range(this.#schedules, { end: prefixEnd(this.#schedules) });
    return values.map(({ value }) => JSON.parse(value) as Scheduled);
  }

  /** Stop following and disconnect (this host leaves the list at once). */
  async close(): Promise<void> {
    await Promise.all([...this.#following].map((following) => following.stop()));
    // at most a second: an etcd that does not answer must not hold up a stop (the lease expires anyway)
    clearInterval(this.#keepingAlive);
    const lease = this.#lease?.catch(() => undefined);
    this.#lease = undefined;
    const revoked = lease?.then((id) => (id === undefined ? undefined : this.#client.revoke(id))).catch(() => undefined);
    if (revoked) await Promise.race([revoked, new Promise((resolve) => setTimeout(resolve, 1000).unref())]);
    this.#client.close();
  }
}
