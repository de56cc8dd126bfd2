// etcd's v3 API as the fleet's log uses it, over the JSON gateway every etcd member serves on its
// client URL (the gRPC API as HTTP/1.1 and JSON: keys and values in base64, 64-bit numbers as
// strings). cdp used the etcd3 package before: its gRPC stack (grpc-js, protobufjs and the parsed
// .proto files) held some 20 MB in every host process, and had to be installed beside cdp.
// A member that cannot be reached is left for the next one; a watch cut off is opened again.
import http from "node:http";
import https from "node:https";

export interface EtcdOptions {
  /** Client URLs of the members, `http(s)://host:port`. */
  endpoints: string[];
  auth?: { username: string; password: string };
  /** PEM contents: the CA, and a client certificate and key if etcd asks for one. */
  tls?: { ca: Buffer; cert?: Buffer; key?: Buffer };
}

export interface KeyValue {
  key: string;
  value: string;
}

/** What etcd answered instead (its gRPC status code and message). */
export class EtcdError extends Error {
  constructor(
    message: string,
    readonly code: number,
  ) {
    super(message);
  }
}

/** etcd refused who this host is (a wrong user or password, a role without the prefix): trying again will not help. */
export const isRefusal = (error: unknown): error is EtcdError => error instanceof EtcdError && /authentication failed|permission denied/.test(error.message);

/** The member answered but cannot serve now (gRPC's UNAVAILABLE, a deadline): another member may. */
const cannotServe = (error: EtcdError) => error.code === 14 || error.code === 4 || /context deadline exceeded/.test(error.message);

/** A condition of a transaction: the key does not exist, or holds exactly `value`. */
export type Compare = { key: string; absent: true } | { key: string; value: string };

/** An operation of a transaction. */
export type Operation = { put: string; value: string; lease?: string } | { delete: string; end?: string } | { get: string };

export interface RangeOptions {
  /** The end of the range (excluded); a prefix's with `prefixEnd`. */
  end?: string;
  limit?: number;
  order?: "ASCEND" | "DESCEND";
  keysOnly?: boolean;
}

/** A watch on a range of keys: each value put, in order; `connected` each time it is opened again after a cut. */
export interface WatchHandlers {
  put(kv: KeyValue): void;
  connected(): void;
  error(error: Error): void;
}

const base64 = (text: string) => Buffer.from(text).toString("base64");
const text = (encoded: string | undefined) => (encoded === undefined ? "" : Buffer.from(encoded, "base64").toString());

/** The end of the range of keys that start with `prefix`: its last character plus one (UTF-8 keeps code points' order). */
export const prefixEnd = (prefix: string): string => prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);

/** How long a request may wait for a byte of its answer before the member is taken for lost. */
const QUIET_MS = 10_000;

interface RawKv {
  key: string;
  value?: string;
}
interface RangeAnswer {
  kvs?: RawKv[];
}
interface TxnAnswer {
  succeeded?: boolean;
  responses?: { response_range?: RangeAnswer }[];
}

const rangeRequest = (key: string, options: RangeOptions = {}) => ({
  key: base64(key),
  ...(options.end === undefined ? {} : { range_end: base64(options.end) }),
  ...(options.limit === undefined ? {} : { limit: String(options.limit) }),
  ...(options.order === undefined ? {} : { sort_order: options.order, sort_target: "KEY" }),
  ...(options.keysOnly ? { keys_only: true } : {}),
});

function requestOp(operation: Operation): object {
  if ("put" in operation)
    return { request_put: { key: base64(operation.put), value: base64(operation.value), ...(operation.lease ? { lease: operation.lease } : {}) } };
  if ("delete" in operation)
    return { request_delete_range: { key: base64(operation.delete), ...(operation.end === undefined ? {} : { range_end: base64(operation.end) }) } };
  return { request_range: { key: base64(operation.get) } };
}

const compareOp = (compare: Compare) =>
  "absent" in compare
    ? { key: base64(compare.key), target: "CREATE", result: "EQUAL", create_revision: "0" }
    : { key: base64(compare.key), target: "VALUE", result: "EQUAL", value: base64(compare.value) };

const headersOf = (body: string, token: string | undefined): http.OutgoingHttpHeaders => ({
  "content-type": "application/json",
  "content-length": Buffer.byteLength(body),
  ...(token ? { authorization: token } : {}),
});

const decodeKvs = (kvs: RawKv[] | undefined): KeyValue[] => (kvs ?? []).map((kv) => ({ key: text(kv.key), value: text(kv.value) }));

/** An answer's error, in either of the gateway's two shapes (a call's, a stream's). */
function answerError(answer: { error?: unknown; message?: string; code?: number }): EtcdError | undefined {
  if (answer.error === undefined) return undefined;
  if (typeof answer.error === "object" && answer.error !== null) {
    const { message, grpc_code } = answer.error as { message?: string; grpc_code?: number };
    return new EtcdError(message ?? "etcd refused the request", grpc_code ?? 2);
  }
  return new EtcdError(answer.message ?? String(answer.error), answer.code ?? 2);
}

export class Etcd {
  #endpoints: string[];
  #current = 0;
  #agent: http.Agent;
  #transport: typeof http | typeof https;
  #auth: EtcdOptions["auth"];
  #token: Promise<string> | undefined;
  #watches = new Set<{ cancel(): void }>();

  constructor(options: EtcdOptions) {
    if (options.endpoints.length === 0) throw new Error("no etcd endpoint");
    this.#endpoints = options.endpoints.map((url) => url.replace(/\/+$/, ""));
    const tls = this.#endpoints[0]!.startsWith("https:");
    this.#transport = tls ? https : http;
    this.#agent = tls
      ? new https.Agent({ keepAlive: true, ca: options.tls?.ca, cert: options.tls?.cert, key: options.tls?.key })
      : new http.Agent({ keepAlive: true });
    this.#auth = options.auth;
  }

  async get(key: string): Promise<string | undefined> {
    const answer = await this.#call<RangeAnswer>("/v3/kv/range", rangeRequest(key));
    return answer.kvs?.[0] ? text(answer.kvs[0].value) : undefined;
  }

  async range(key: string, options: RangeOptions): Promise<KeyValue[]> {
    return decodeKvs((await this.#call<RangeAnswer>("/v3/kv/range", rangeRequest(key, options))).kvs);
  }

  async put(key: string, value: string, lease?: string): Promise<void> {
    await this.#call("/v3/kv/put", { key: base64(key), value: base64(value), ...(lease ? { lease } : {}) });
  }

  /**
   * A transaction: `success` if every condition holds, else `failure`; the values `failure`'s gets
   * read, and whether it was sent more than once (an answer lost on the way: it may have been
   * applied by an earlier sending).
   */
  async txn(
    compare: Compare[],
    success: Operation[],
    failure: Operation[] = [],
  ): Promise<{ succeeded: boolean; got: (KeyValue | undefined)[]; resent: boolean }> {
    let resent = false;
    const body = { compare: compare.map(compareOp), success: success.map(requestOp), failure: failure.map(requestOp) };
    const answer = await this.#call<TxnAnswer>("/v3/kv/txn", body, () => (resent = true));
    const got = (answer.responses ?? []).filter((response) => "response_range" in response).map((response) => decodeKvs(response.response_range!.kvs)[0]);
    return { succeeded: answer.succeeded === true, got, resent };
  }

  /** A lease of `ttl` seconds: its id. */
  async grant(ttl: number): Promise<string> {
    return (await this.#call<{ ID: string }>("/v3/lease/grant", { TTL: ttl })).ID;
  }

  /** Renew a lease: the seconds it has left, 0 when it is gone. */
  async keepAlive(id: string): Promise<number> {
    const answer = await this.#call<{ result?: { TTL?: string } }>("/v3/lease/keepalive", { ID: id });
    return Number(answer.result?.TTL ?? 0);
  }

  async revoke(id: string): Promise<void> {
    await this.#call("/v3/lease/revoke", { ID: id });
  }

  /** Follow the keys from `key` to `end`: resolved once etcd has opened the watch; `reopen` moves it to the next member. */
  async watch(key: string, end: string, handlers: WatchHandlers): Promise<{ cancel(): void; reopen(why: string): void }> {
    let cancelled = false;
    let request: http.ClientRequest | undefined;
    let cut: ((error: Error) => void) | undefined; // ends the connection in use
    let retry: NodeJS.Timeout | undefined;
    let delay = 250;
    const body = JSON.stringify({ create_request: { key: base64(key), range_end: base64(end) } });
    const open = (first: boolean) =>
      new Promise<void>((resolve, reject) => {
        let created = false;
        let over = false; // this connection's end is handled once (an error, then its close)
        const failed = (error: Error) => {
          if (over || cancelled) return;
          over = true;
          request?.destroy();
          if (first && !created) return reject(error);
          if (!this.#forgetToken(error)) handlers.error(error);
          this.#current = (this.#current + 1) % this.#endpoints.length; // the next member
          retry = setTimeout(() => void open(false), delay);
          delay = Math.min(delay * 2, 5000);
        };
        cut = failed;
        const take = (line: string) => {
          const answer = JSON.parse(line) as { error?: unknown; result?: { created?: boolean; canceled?: boolean; events?: { type?: string; kv: RawKv }[] } };
          const error = answerError(answer);
          if (error) return failed(error);
          const result = answer.result ?? {};
          if (result.created) {
            [created, delay] = [true, 250];
            if (first) resolve();
            else handlers.connected();
          }
          for (const event of result.events ?? []) if (event.type !== "DELETE") handlers.put({ key: text(event.kv.key), value: text(event.kv.value) });
          if (result.canceled) failed(new Error("etcd cancelled the watch"));
        };
        Promise.resolve(this.#tokenOnce())
          .then((token) => {
            if (cancelled) return;
            request = this.#transport.request(`${this.#endpoints[this.#current]}/v3/watch`, {
              method: "POST",
              agent: this.#agent,
              // a member without a leader ends the watch (clientv3's WithRequireLeader): it would hear nothing more
              headers: { ...headersOf(body, token), "grpc-metadata-hasleader": "true" },
            });
            request.on("socket", (socket) => socket.setKeepAlive(true, 5000));
            request.on("error", failed);
            request.on("response", (response) => {
              // one answer per line; a value never holds a raw newline (JSON escapes it)
              let pending: Buffer = Buffer.alloc(0);
              response.on("data", (chunk: Buffer) => {
                pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
                try {
                  for (let newline = pending.indexOf(10); newline >= 0 && !over; newline = pending.indexOf(10)) {
                    const line = pending.subarray(0, newline).toString();
                    pending = pending.subarray(newline + 1);
                    if (line.trim() !== "") take(line);
                  }
                } catch (error) {
                  failed(error as Error);
                }
              });
              response.on("end", () => failed(new Error("etcd closed the watch")));
              response.on("error", failed);
            });
            request.end(body);
          })
          .catch(failed);
      });
    await open(true);
    const watch = {
      cancel: () => {
        cancelled = true;
        clearTimeout(retry);
        request?.destroy();
        this.#watches.delete(watch);
      },
      reopen: (why: string) => cut?.(new Error(why)),
    };
    this.#watches.add(watch);
    return watch;
  }

  close(): void {
    for (const watch of [...this.#watches]) watch.cancel();
    this.#agent.destroy();
  }

  /** A call to the member in use; to the next ones while it cannot be reached, and once more after a token expired. */
  async #call<T>(path: string, body: object, resending?: () => void): Promise<T> {
    const payload = JSON.stringify(body);
    let renewed = false;
    for (let attempt = 1; ; attempt++) {
      if (attempt > 1) resending?.();
      try {
        return await this.#post<T>(this.#endpoints[this.#current]!, path, payload, await this.#tokenOnce());
      } catch (error) {
        if (error instanceof EtcdError && !cannotServe(error)) {
          // a token etcd no longer knows (it forgets them after a while): ask for another, once
          if (!renewed && this.#forgetToken(error)) {
            renewed = true;
            continue;
          }
          throw error;
        }
        // the member cannot be reached, or cannot serve (no leader: cut off from the others): the
        // next one; at least twice: a kept-alive connection may have been closed as it was reused
        if (attempt >= Math.max(2, this.#endpoints.length)) throw error;
        this.#current = (this.#current + 1) % this.#endpoints.length;
      }
    }
  }

  #post<T>(endpoint: string, path: string, payload: string, token: string | undefined): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const headers = headersOf(payload, token);
      const request = this.#transport.request(`${endpoint}${path}`, { method: "POST", agent: this.#agent, headers, timeout: QUIET_MS }, (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("error", reject);
        response.on("end", () => {
          const body = Buffer.concat(chunks).toString();
          let answer: T & { error?: unknown };
          try {
            answer = JSON.parse(body) as T & { error?: unknown };
          } catch {
            return reject(new Error(`etcd at ${endpoint} answered ${response.statusCode} ${body.slice(0, 200)}`));
          }
          const error = answerError(answer);
          if (error) reject(error);
          else if (response.statusCode !== 200) reject(new Error(`etcd at ${endpoint} answered ${response.statusCode}`));
          else resolve(answer);
        });
      });
      request.on("timeout", () => request.destroy(new Error(`etcd at ${endpoint} did not answer in ${QUIET_MS / 1000} s`)));
      request.on("error", reject);
      request.end(payload);
    });
  }

  /** Whether etcd no longer knows our token (it forgets one unused for a while, --auth-token-ttl): then another is asked for. */
  #forgetToken(error: unknown): boolean {
    if (!this.#auth || !(error instanceof EtcdError) || !/invalid auth token|user name is empty/.test(error.message)) return false;
    this.#token = undefined;
    return true;
  }

  /** The token etcd gave for the user, asked for once for every call (when etcd's authentication is on). */
  #tokenOnce(): Promise<string | undefined> | undefined {
    return this.#auth ? (this.#token ??= this.#authenticate()) : undefined;
  }

  async #authenticate(): Promise<string> {
    const { username, password } = this.#auth!;
    const payload = JSON.stringify({ name: username, password });
    for (let attempt = 1; ; attempt++) {
      try {
        return (await this.#post<{ token: string }>(this.#endpoints[this.#current]!, "/v3/auth/authenticate", payload, undefined)).token;
      } catch (error) {
        if (error instanceof EtcdError || attempt >= Math.max(2, this.#endpoints.length)) {
          this.#token = undefined;
          throw error;
        }
        this.#current = (this.#current + 1) % this.#endpoints.length;
      }
    }
  }
}
