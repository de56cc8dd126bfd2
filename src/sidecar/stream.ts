// The sidecar's event stream: each applied change as a server-sent event whose `id:` is its
// revision. A client that reconnects with Last-Event-ID first gets what it missed, in order: from
// the recent events kept in memory, else from the journal's history, else (that history was
// compacted away) one `snapshot` event with the whole configuration. Then live events follow.
import type { ServerResponse } from "node:http";
import type { Logger } from "pino";
import type { HistoryEntry, JournalState } from "../store/journal.js";
import { replayJournal } from "../store/journal.js";
import { declaredVersion } from "../schemas/migrations.js";
import { keysOf, type RolloutStep } from "../fleet/rollouts.js";
import type { LineOutcome, Pipeline } from "../types.js";
import { serveRejection } from "../store/rejects.js";
import { withoutSecrets } from "../schemas/schemas.js";
import type { ChangeEvent } from "../store/table.js";
import type { AppConfig } from "../lines/values.js";
import { appOfLine } from "../lines/parse.js";
import type { Grant } from "./tokens.js";
import { scheduledBy } from "../store/records.js";

/** Whether a client with this token sees a line for `app` (a line that names none: only a token for every app). */
const covers = (grant: Grant | undefined, app: string | undefined) => !grant || (app === undefined ? grant.apps === undefined : grant.allows(app));

/** Which events a client wants: one app, or one key of it (a change above or below the key counts). */
export interface StreamFilter {
  app?: string;
  key?: string;
  /** Also send `rejected` events (no id) for lines that cdp rejected. */
  rejections?: boolean;
  /** The client's token: only its apps, and secret values only with `secrets` (none: every app, no secrets). */
  grant?: Grant;
}

export interface StreamOptions {
  log: Logger;
  /** A comment line this often keeps proxies from closing an idle stream. */
  keepAliveMs: number;
  /** How many recent events are kept for clients that reconnect. */
  recent?: number;
  /** A client that lets more than this many bytes pile up unread is dropped (it reconnects and catches up). */
  maxBufferedBytes?: number;
}

interface Frame {
  revision: number;
  app: string;
  key: string;
  /** Encoded once, written as is to every client. */
  bytes: Buffer;
  /** The same event with its secret values, for clients whose token has `secrets` (a change that touches a secret). */
  secretBytes?: Buffer;
}

interface Client {
  res: ServerResponse;
  filter: StreamFilter;
  /** Live frames that arrive while the client catches up. */
  backlog: Frame[] | undefined;
  /** Nothing was written to it since the last keep-alive tick. */
  idle: boolean;
}

type ChangeData = Pick<ChangeEvent, "revision" | "app" | "key" | "value" | "previous" | "source" | "by" | "reason"> & { time: string | undefined };

export class EventStream {
  #pipeline: Pipeline;
  #options: Required<StreamOptions>;
  #clients = new Set<Client>();
  #recent: Frame[] = [];
  #history: { from: number; state: Promise<JournalState> } | undefined;
  #keepAlive: NodeJS.Timeout;
  #unsubscribe: () => void;
  #rejectionClients = 0;

  constructor(pipeline: Pipeline, options: StreamOptions) {
    this.#pipeline = pipeline;
    this.#options = { recent: 10_000, maxBufferedBytes: 1 << 20, ...options };
    this.#unsubscribe = pipeline.table.subscribeAll((event) => this.#publish(this.#frameOf(event)));
    pipeline.events.on("rollout", this.#onRollout);
    this.#keepAlive = setInterval(() => {
      // only to streams that were quiet (5,000 busy streams would each take a write for nothing)
      for (const client of this.#clients) {
        if (client.idle && !client.backlog) this.#send(client, ": keep-alive\n\n");
        client.idle = true;
      }
    }, options.keepAliveMs).unref();
  }

  /** How many clients are connected. */
  get clients(): number {
    return this.#clients.size;
  }

  /** Stream to `res`: first every change after revision `since` (if given), then live changes. */
  async open(res: ServerResponse, since: number | undefined, filter: StreamFilter): Promise<void> {
    const { table } = this.#pipeline;
    // not chunked: the stream ends only when the connection does, and each event is then one write of bytes encoded once for every client
    res.removeHeader("transfer-encoding");
    res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-store", "x-accel-buffering": "no" });
    res.write(`retry: 1000\n: cdp at revision ${table.revision}\n\n`);
    const client: Client = { res, filter, backlog: undefined, idle: false };
    this.#clients.add(client);
    if (filter.rejections && this.#rejectionClients++ === 0) this.#pipeline.events.on("lines", this.#onLines);
    res.on("close", () => {
      this.#clients.delete(client);
      if (filter.rejections && --this.#rejectionClients === 0) this.#pipeline.events.off("lines", this.#onLines);
    });
    if (since === undefined || since === table.revision) return;
    const upTo = table.revision;
    const oldest = this.#recent[0];
    if (since < upTo && oldest !== undefined && oldest.revision <= since) {
      for (const frame of this.#recent) if (frame.revision > since) this.#deliver(client, frame);
      return;
    }
    client.backlog = [];
    let last = upTo;
    const missed = since < upTo ? await this.#fromJournal(since, upTo) : undefined;
    if (missed) {
      for (const frame of missed) this.#deliver(client, frame);
    } else {
      last = table.revision;
      this.#send(client, this.#snapshotFrame(filter));
    }
    const backlog = client.backlog;
    client.backlog = undefined;
    for (const frame of backlog) if (frame.revision > last) this.#deliver(client, frame);
  }

  close(): void {
    clearInterval(this.#keepAlive);
    this.#unsubscribe();
    this.#pipeline.events.off("rollout", this.#onRollout);
    for (const client of this.#clients) client.res.end();
  }

  #publish(frame: Frame): void {
    this.#recent.push(frame);
    if (this.#recent.length >= 2 * this.#options.recent) this.#recent.splice(0, this.#recent.length - this.#options.recent);
    for (const client of this.#clients) {
      if (client.backlog) client.backlog.push(frame);
      else this.#deliver(client, frame);
    }
  }

  #deliver(client: Client, frame: Frame): void {
    const { app, key, grant } = client.filter;
    if (app !== undefined && frame.app !== app) return;
    if (key !== undefined && !(frame.key === key || frame.key.startsWith(`${key}.`) || key.startsWith(`${frame.key}.`))) return;
    if (grant && !grant.allows(frame.app)) return;
    this.#send(client, grant?.secrets && frame.secretBytes ? frame.secretBytes : frame.bytes);
  }

  #send(client: Client, data: string | Buffer): void {
    client.res.write(data);
    client.idle = false;
    if (client.res.writableLength > this.#options.maxBufferedBytes) {
      this.#options.log.warn(
        { buffered: client.res.writableLength },
        "dropping an event-stream client that does not keep up (it catches up when it reconnects)",
      );
      client.res.destroy();
    }
  }

  // a rollout's steps go to every client that follows its app (the keys it changes, not their values: they may be secret)
  #onRollout = ({ step, rollout }: RolloutStep) => {
    const { lines: _lines, before: _before, ...said } = rollout;
    const text = `event: rollout\ndata: ${JSON.stringify({ step, revision: this.#pipeline.table.revision, ...said, keys: keysOf(rollout) })}\n\n`;
    for (const client of this.#clients) {
      const { app, grant } = client.filter;
      if (!client.backlog && (app === undefined || app === rollout.app) && (!grant || grant.allows(rollout.app))) this.#send(client, text);
    }
  };

  #onLines = (_file: string, lines: LineOutcome[]) => {
    const time = new Date().toISOString();
    for (const line of lines) {
      if (line.outcome !== "rejected") continue;
      const served = serveRejection({ time, source: `cdp.new:${line.number}`, reason: line.reason!, text: line.text }, this.#pipeline.schemas);
      const text = `event: rejected\ndata: ${JSON.stringify(served)}\n\n`;
      const app = appOfLine(line.text);
      for (const client of this.#clients) if (client.filter.rejections && !client.backlog && covers(client.filter.grant, app)) this.#send(client, text);
    }
  };

  #frameOf(change: ChangeData): Frame {
    const { revision, app, key, time, source } = change;
    const schema = this.#pipeline.schemas.get(app);
    const version = schema && declaredVersion(schema);
    const scheduled = scheduledBy(source);
    // set one by one: conditional spreads would build it in V8's slow path, at every change
    const who: { scheduled?: string; by?: string; reason?: string; version?: number } = {};
    if (scheduled !== undefined) who.scheduled = scheduled;
    if (change.by !== undefined) who.by = change.by;
    if (change.reason !== undefined) who.reason = change.reason;
    if (version !== undefined) who.version = version;
    const path = key.split(".");
    const info = schema?.key(path);
    let data: object;
    let secretBytes: Buffer | undefined;
    if (!schema || (typeof info === "object" && info.secret)) {
      data = { revision, app, key, secret: true, time, source, ...who };
      const whole = { revision, app, key, secret: true, value: change.value, previous: change.previous, time, source, ...who };
      secretBytes = Buffer.from(`id: ${revision}\ndata: ${JSON.stringify(whole)}\n\n`);
    } else
      data = {
        revision,
        app,
        key,
        value: withoutSecrets(schema, path, change.value),
        previous: withoutSecrets(schema, path, change.previous),
        time,
        source,
        ...who,
      };
    return { revision, app, key, bytes: Buffer.from(`id: ${revision}\ndata: ${JSON.stringify(data)}\n\n`), secretBytes };
  }

  #snapshotFrame(filter: StreamFilter): string {
    const snapshot = this.#pipeline.table.snapshot();
    const apps: Record<string, unknown> = {};
    for (const [app, config] of Object.entries(snapshot.apps)) {
      const schema = this.#pipeline.schemas.get(app);
      if (!schema || (filter.app !== undefined && filter.app !== app) || (filter.grant && !filter.grant.allows(app))) continue;
      apps[app] = filter.grant?.secrets ? config : withoutSecrets(schema, [], config as AppConfig);
    }
    return `event: snapshot\nid: ${snapshot.revision}\ndata: ${JSON.stringify({ revision: snapshot.revision, apps })}\n\n`;
  }

  /** The changes after `since` up to `upTo` from the journal, or undefined when it no longer holds each of them. */
  async #fromJournal(since: number, upTo: number): Promise<Frame[] | undefined> {
    const { journalPath, schemas, validators, table } = this.#pipeline;
    if (!this.#history || this.#history.from < upTo) {
      const state = replayJournal(journalPath, schemas, { validators, history: true });
      const history = { from: table.revision, state };
      this.#history = history;
      void state.catch(() => undefined).finally(() => this.#history === history && (this.#history = undefined));
    }
    let entries: HistoryEntry[];
    try {
      entries = (await this.#history.state).history.filter((entry) => entry.revision > since && entry.revision <= upTo);
    } catch (error) {
      this.#options.log.warn({ err: error }, "could not read the journal's history for a client that reconnected: it gets a snapshot");
      return undefined;
    }
    // a schema upgrade's revision has no change record: the client needs a snapshot then
    if (new Set(entries.map((entry) => entry.revision)).size !== upTo - since) return undefined;
    return entries.map((entry) => this.#frameOf(entry));
  }
}
