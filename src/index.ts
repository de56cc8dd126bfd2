// The public API of cdp: start the pipeline on a data directory, read the live table, subscribe.
import { pino, type Logger } from "pino";
import { CdpError, checkMs } from "./errors.js";
import { hostname } from "node:os";
import { resolve } from "node:path";
import type { FleetLog } from "./fleet/log.js";
import { initDataDir, isDataDir } from "./store/datadir.js";
import { startPipeline } from "./pipeline/start.js";
import type { Sidecar } from "./sidecar/server.js";
import { loadTokenFile } from "./sidecar/tokens.js";
import { readSecretsKey } from "./store/secrets-key.js";
import type { ChangeEvent, LiveConfig, Snapshot, Subscriber } from "./store/table.js";
import type { Rollout } from "./fleet/rollouts.js";
import type { AppValidator } from "./schemas/validate.js";
import type { AppConfig } from "./lines/values.js";

export interface CdpOptions {
  /**
   * The data directory: `cdp.new` (inbox), `cdp` (journal), `cdp.rej` (rejects). It must have been
   * initialised (`cdp init`, or `init: true`): a missing or unmarked directory is refused.
   */
  dir: string;
  /** Initialise the data directory first if it is not one yet, as `cdp init` does (default false). */
  init?: boolean;
  /** The directory of `<app>.schema.json` files. */
  schemas: string;
  /**
   * The schema version (`x-cdp-version`) this code expects per app, e.g. `{ snow: 2 }`: cdp refuses
   * to start (CdpError "bootstrap") on another one, and refuses a live schema change to another.
   */
  expect?: Record<string, number>;
  /** Code-level checks per app, run on the app's whole config after each change (and at start). */
  validators?: Record<string, AppValidator | AppValidator[]>;
  /** A pino logger; by default JSON lines on stderr at level info. */
  logger?: Logger;
  /** Lines longer than this many bytes are rejected (default 65536; with `cluster` at most 131072). */
  maxLineBytes?: number;
  /** How often the inbox is checked when no file-system event arrives, in ms (default 1000). */
  pollIntervalMs?: number;
  /** Use file-system events (default true); false relies on the periodic check alone. */
  watchEvents?: boolean;
  /** Stop (CdpError "inbox") when the inbox is unavailable longer than this, in ms (default 10000)… */
  maxOutageMs?: number;
  /** …or more than this many times (default 5) within `outageWindowMs` (default 600000). */
  maxOutages?: number;
  outageWindowMs?: number;
  /** Compact the journal once it holds this many change records (default 100000; 0: never)… */
  compactAfter?: number;
  /** …keeping the last this many as history (default 1000). */
  keepHistory?: number;
  /** How long a change stays tentative: a subscriber may `veto()` it within this many ms (default 10000). */
  vetoWindowMs?: number;
  /** Serve the sidecar's HTTP API, event stream, metrics and dashboard (off by default). */
  http?: HttpOptions;
  /** Join a fleet: one configuration for many hosts, ordered by etcd (off by default). */
  cluster?: ClusterOptions;
  /** Render files (paths of JSON files of `{"targets": [...]}`): app configs written for services that read files. */
  render?: string[];
  /**
   * A file holding a 256-bit key as 64 hex digits, kept outside the data directory: every secret
   * (writeOnly) value cdp writes is sealed with it (AES-256-GCM), and sealed values are opened with it.
   */
  secretsKeyFile?: string;
}

export interface ClusterOptions {
  /** etcd client URLs (`http://host:2379`). */
  endpoints: string[];
  /** The fleet's key prefix in etcd, e.g. `/cdp/prod`: every host of the fleet uses the same. */
  prefix: string;
  /** This host's name in the fleet's records (default: the machine's hostname and the data directory). */
  host?: string;
  /** etcd user and password, when etcd's authentication is on. */
  auth?: { username: string; password: string };
  /** PEM contents for TLS to etcd: the CA, and a client certificate and key if etcd asks for one. */
  tls?: { ca: Buffer; cert?: Buffer; key?: Buffer };
  /**
   * Move the fleet *down* to this host's schema files where they are older than the fleet's
   * versions (with the steps the journal recorded): the explicit start of a rolling downgrade.
   * Without it, a host with older files keeps the fleet's versions.
   */
  downgrade?: boolean;
}

export interface HttpOptions {
  /** `HOST:PORT`, `[IPv6]:PORT` or `PORT` (on 127.0.0.1); port 0 takes a free port. */
  listen: string;
  /** Bearer tokens, one `read|write|admin TOKEN NAME [apps=A,B*] [secrets]` per line; required off loopback; read again when it changes. */
  tokenFile?: string;
  /** Larger request bodies are refused with 413 (default 1 MiB). */
  maxBodyBytes?: number;
  /** How long POST /v1/changes waits for the lines' outcomes before answering 202 (default 10000 ms). */
  waitMs?: number;
  /** How often an idle event stream gets a keep-alive comment (default 15000 ms). */
  keepAliveMs?: number;
  /** A request whose headers and body are not received within this time is cut off (default 15000 ms). */
  requestTimeoutMs?: number;
}

/** A running cdp: the live config table fed by the inbox. */
export interface Cdp extends LiveConfig {
  /** The app's schema version in force (`x-cdp-version`; 1 when its schema declares none), or undefined for an unknown app. */
  schemaVersion(app: string): number | undefined;
  /**
   * A fleet's rollouts as this host knows them (in progress and recent, newest first); none for a
   * single host. A subscriber's `veto()` of a change a rollout staged on this host aborts the rollout.
   */
  rollouts(): Rollout[];
  /** Add a code-level check for an app; it applies to the changes that follow. */
  registerValidator(app: string, validator: AppValidator): void;
  /** The sidecar's address (`http://127.0.0.1:7070`), when `http` was given. */
  readonly url: string | undefined;
  /** Settles when cdp stops: after `stop()`, or rejected with the fault that stopped it. */
  readonly stopped: Promise<void>;
  /** Finish and flush the batch in hand, then stop watching. */
  stop(): Promise<void>;
}

/** The fleet's code, loaded only for a fleet. */
async function loadFleet(): Promise<typeof import("./fleet/log.js") & typeof import("./fleet/host.js")> {
  return { ...(await import("./fleet/log.js")), ...(await import("./fleet/host.js")) };
}

/** A line escaped to JSON (6 bytes for a control character) still fits one etcd request with its commit. */
const MAX_FLEET_LINE_BYTES = 128 << 10;

/**
 * Start cdp on a data directory. Rejects with a {@link CdpError} when a schema or the journal is
 * invalid: cdp never starts on an invalid config.
 * @example
 * const cdp = await startCdp({ dir: "/var/lib/cdp", schemas: "./schemas" });
 * cdp.subscribe("ticker", "interval", ({ value }) => reschedule(value as number));
 */
export async function startCdp(options: CdpOptions): Promise<Cdp> {
  if (options.cluster && (options.maxLineBytes ?? 65536) > MAX_FLEET_LINE_BYTES) {
    throw new CdpError(
      "usage",
      `in a fleet --max-line-bytes is at most ${MAX_FLEET_LINE_BYTES}: each line goes to etcd within one request, escaped (etcd takes 1.5 MiB per request by default)`,
    );
  }
  for (const name of ["pollIntervalMs", "maxOutageMs", "outageWindowMs", "vetoWindowMs"] as const) checkMs(name, options[name]);
  for (const name of ["waitMs", "keepAliveMs", "requestTimeoutMs"] as const) checkMs(`http.${name}`, options.http?.[name]);
  const sealing = options.secretsKeyFile === undefined ? undefined : await readSecretsKey(options.secretsKeyFile);
  if (options.init && !(await isDataDir(resolve(options.dir)))) await initDataDir(resolve(options.dir), resolve(options.schemas), sealing);
  const validators = new Map<string, AppValidator[]>();
  for (const [app, list] of Object.entries(options.validators ?? {})) validators.set(app, [list].flat());
  const log = options.logger ?? pino({ level: "info" }, pino.destination(2));
  const sidecar = options.http && (await serveHttp(options.http, log));
  const { cluster } = options;
  // the sidecar and etcd's client are loaded only when asked for: a plain watcher stays small
  const fleetCode = cluster && (await loadFleet());
  const fleet: FleetLog | undefined = fleetCode && new fleetCode.FleetLog({ ...cluster, log: log.child({ stage: "fleet" }) });
  const host = options.cluster?.host ?? `${hostname()}:${resolve(options.dir)}`.replace(/\s+/g, "_");
  const downgrade = cluster?.downgrade === true;
  const pipeline = await startPipeline({
    dir: options.dir,
    schemas: options.schemas,
    validators,
    inbox: Object.freeze({
      maxLineBytes: options.maxLineBytes ?? 65536,
      pollIntervalMs: options.pollIntervalMs ?? 1000,
      watchEvents: options.watchEvents ?? true,
      maxOutageMs: options.maxOutageMs ?? 10_000,
      maxOutages: options.maxOutages ?? 5,
      outageWindowMs: options.outageWindowMs ?? 600_000,
    }),
    compaction: Object.freeze({ after: options.compactAfter ?? 100_000, keep: options.keepHistory ?? 1000 }),
    vetoWindowMs: options.vetoWindowMs ?? 10_000,
    expect: options.expect ?? {},
    render: options.render ?? [],
    fleet: fleet && fleetCode && { host, downgrade, open: (context) => fleetCode.openFleetHost(fleet, host, downgrade, context) },
    // for `cdp status`: what this watcher serves
    watcher: { ...(sidecar ? { url: sidecar.url } : {}), ...(fleet ? { fleet: { prefix: options.cluster!.prefix, host } } : {}) },
    sealing,
    log,
  }).catch(async (error: unknown) => {
    await sidecar?.close();
    await fleet?.close();
    throw error;
  });
  sidecar?.attach(pipeline);
  const stopped = pipeline.stopped.finally(async () => {
    await sidecar?.close();
    await fleet?.close();
  });
  stopped.catch(() => undefined); // logged by the pipeline; whoever awaits `stopped` still sees it
  const { table } = pipeline;
  return {
    get revision() {
      return table.revision;
    },
    get: table.get.bind(table),
    snapshot: table.snapshot.bind(table),
    subscribe: table.subscribe.bind(table),
    schemaVersion: (app) => pipeline.schemas.get(app)?.version,
    rollouts: () => pipeline.rollouts(),
    registerValidator(app, validator) {
      if (!pipeline.schemas.has(app)) throw new CdpError("usage", `cannot register a validator for unknown app "${app}"`);
      validators.set(app, [...(validators.get(app) ?? []), validator]);
    },
    url: sidecar?.url,
    stopped,
    async stop() {
      await pipeline.stop();
      await stopped;
    },
  };
}

async function serveHttp(http: HttpOptions, log: Logger): Promise<Sidecar> {
  const tokens = http.tokenFile === undefined ? undefined : loadTokenFile(http.tokenFile, log.child({ stage: "sidecar" }));
  const { startSidecar } = await import("./sidecar/server.js");
  return startSidecar({
    listen: http.listen,
    tokens,
    maxBodyBytes: http.maxBodyBytes ?? 1 << 20,
    waitMs: http.waitMs ?? 10_000,
    keepAliveMs: http.keepAliveMs ?? 15_000,
    requestTimeoutMs: http.requestTimeoutMs ?? 15_000,
    log: log.child({ stage: "sidecar" }),
  }).catch((error: unknown) => {
    tokens?.close();
    throw error;
  });
}

export { CdpError } from "./errors.js";
export type { CdpErrorCode } from "./errors.js";
export { parseLine } from "./lines/parse.js";
export { connectCdp } from "./sidecar/remote.js";
export type { RemoteCdp, RemoteOptions } from "./sidecar/remote.js";
export type { ParsedLine } from "./lines/parse.js";
export type { Rollout } from "./fleet/rollouts.js";
export type { AppConfig, AppValidator, ChangeEvent, LiveConfig, Snapshot, Subscriber };
