// A client for processes beside a cdp sidecar: the embedded table's read and subscribe API, fed
// over HTTP. It loads the configuration once, then follows the event stream into a local table;
// after a dropped connection it reconnects with Last-Event-ID, so no change is missed. Secret
// (writeOnly) keys are served only to a token with "secrets": without one they are absent here.
import { pino, type Logger } from "pino";
import { CdpError } from "../errors.js";
import { ConfigTable, type LiveConfig } from "../store/table.js";
import { withValueBelow, type AppConfig } from "../lines/values.js";

export interface RemoteOptions {
  /** The sidecar's address, e.g. `http://127.0.0.1:7070`. */
  url: string;
  /** A bearer token with the read scope (and `secrets` for secret values), when the sidecar asks for one. */
  token?: string;
  /** A pino logger; by default JSON lines on stderr at level info. */
  logger?: Logger;
}

/** A live view of a sidecar's configuration: reads are local and synchronous. */
export interface RemoteCdp extends LiveConfig {
  /** Whether the event stream is connected right now (it reconnects by itself). */
  readonly connected: boolean;
  /** Close the event stream. */
  stop(): Promise<void>;
}

interface ChangeData {
  revision: number;
  app: string;
  key: string;
  value?: unknown;
  secret?: boolean;
  time: string;
  source: string;
}

/**
 * Connect to a cdp sidecar. Rejects with a {@link CdpError} (code "remote") when it cannot be
 * reached or refuses the token; once connected, outages are retried in the background.
 * @example
 * const cdp = await connectCdp({ url: "http://127.0.0.1:7070" });
 * cdp.subscribe("ticker", "interval", ({ value }) => reschedule(value as number));
 */
export async function connectCdp(options: RemoteOptions): Promise<RemoteCdp> {
  const base = options.url.replace(/\/+$/, "");
  const log = options.logger ?? pino({ level: "info" }, pino.destination(2));
  const headers: Record<string, string> = options.token ? { authorization: `Bearer ${options.token}` } : {};
  const response = await requestWhenReady(`${base}/v1/config`, headers);
  const apps = (await response.json()) as Record<string, AppConfig>;
  const table = new ConfigTable(new Map(Object.entries(apps)), Number(/\d+/.exec(response.headers.get("etag") ?? "")?.[0] ?? 0), log);
  let heard = table.revision; // a secret change is heard but not applied
  let connected = false;
  let stopping = false;
  const abort = new AbortController();

  const follow = async (first: (error?: unknown) => void) => {
    for (let delay = 100; !stopping; delay = Math.min(delay * 2, 5000)) {
      try {
        const stream = await request(`${base}/v1/events`, {
          headers: { ...headers, accept: "text/event-stream", "last-event-id": String(heard) },
          signal: abort.signal,
        });
        connected = true;
        first();
        delay = 100;
        for await (const event of serverSentEvents(stream.body!)) receive(event);
        log.warn({ url: base }, "the cdp event stream ended; reconnecting");
      } catch (error) {
        if (stopping) break;
        first(error);
        log.warn({ url: base, err: error, retryInMs: delay }, "the cdp event stream is down; reconnecting");
      }
      connected = false;
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  };
  const receive = ({ event, data }: { event: string; data: string }) => {
    if (event === "snapshot") {
      const snapshot = JSON.parse(data) as { revision: number; apps: Record<string, AppConfig> };
      table.applyAll(new Map(Object.entries(snapshot.apps)), snapshot.revision, "snapshot", new Date().toISOString());
      heard = snapshot.revision;
    } else if (event === "message") {
      const change = JSON.parse(data) as ChangeData;
      // a secret change carries its value only to a token with "secrets"
      if (!change.secret || "value" in change) {
        const [top, ...below] = change.key.split(".") as [string, ...string[]];
        const topValue = withValueBelow(table.valueOf(change.app, top), below, change.value);
        table.apply({ app: change.app, key: change.key, topValue, revision: change.revision, source: change.source, time: change.time });
      }
      heard = change.revision;
    }
  };
  await new Promise<void>((resolve, reject) => {
    let settled = false;
    void follow((error) => {
      if (settled) return;
      settled = true;
      if (error === undefined) resolve();
      else {
        stopping = true;
        reject(error instanceof CdpError ? error : new CdpError("remote", `cannot follow ${base}/v1/events: ${(error as Error).message}`));
      }
    });
  });

  return {
    get revision() {
      return Math.max(heard, table.revision);
    },
    get connected() {
      return connected;
    },
    get: table.get.bind(table),
    snapshot: table.snapshot.bind(table),
    subscribe: table.subscribe.bind(table),
    async stop() {
      stopping = true;
      abort.abort();
    },
  };
}

/** A sidecar that is still reading its journal answers 503: it is asked again for up to 10 s. */
async function requestWhenReady(url: string, headers: Record<string, string>): Promise<Response> {
  const deadline = Date.now() + 10_000;
  for (let delay = 50; ; delay = Math.min(delay * 2, 1000)) {
    try {
      return await request(url, { headers });
    } catch (error) {
      if (!(error instanceof CdpError && error.message.includes(" answered 503:")) || Date.now() > deadline) throw error;
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
}

/** A response with status 200, or a CdpError with the sidecar's own reason. */
async function request(url: string, init: RequestInit): Promise<Response> {
  let response: Response;
  try {
    response = await fetch(url, init);
  } catch (error) {
    if ((error as Error).name === "AbortError") throw error;
    throw new CdpError("remote", `cannot reach cdp at ${url}: ${((error as Error).cause as Error | undefined)?.message ?? (error as Error).message}`);
  }
  if (response.status === 200) return response;
  const body = await response.text().catch(() => "");
  const reason = (() => {
    try {
      return (JSON.parse(body) as { error?: string }).error ?? body;
    } catch {
      return body;
    }
  })();
  throw new CdpError("remote", `${url} answered ${response.status}: ${reason}`);
}

/** The events of a text/event-stream body: `event` (default "message") and `data`. */
async function* serverSentEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<{ event: string; data: string }> {
  const decoder = new TextDecoder();
  let buffered = "";
  for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
    buffered += decoder.decode(chunk, { stream: true }).replace(/\r\n?/g, "\n");
    for (let end = buffered.indexOf("\n\n"); end !== -1; end = buffered.indexOf("\n\n")) {
      const block = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      let event = "message";
      const data: string[] = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(line.startsWith("data: ") ? 6 : 5));
      }
      if (data.length > 0) yield { event, data: data.join("\n") };
    }
  }
}
