// The sidecar: cdp over HTTP for services in any language and for operators without a shell on
// the box. It listens before the journal is read (so /healthz answers during a long start) and
// serves the pipeline once it is attached. Everything but the probes and the page itself needs a
// bearer token when a token file is given; without one, only a loopback address is allowed.
import { isUtf8 } from "node:buffer";
import { readFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import { CdpError } from "../errors.js";
import { historyJson, planRollback, selectHistory } from "../store/history.js";
import {
  decodePathPart,
  foreignRequest,
  guardDescriptors,
  HttpError,
  isLoopback,
  limitOf,
  listenOn,
  pathOf,
  readBody,
  readJsonObject,
  sendError,
  sendJson,
  sendPage,
  URL_BASE,
} from "./http.js";
import { replayJournal } from "../store/journal.js";
import { createMetrics } from "./metrics.js";
import type { Pipeline } from "../types.js";
import { planFiles } from "../pipeline/plan.js";
import { recentRejections, REJECTS_FILE } from "../store/rejects.js";
import { ConfigCache } from "./config-cache.js";
import { EventStream } from "./stream.js";
import { RecentChanges } from "./changelog.js";
import { newRolloutId, rolloutDirective, servedRollout, type RolloutRequest } from "../fleet/rollouts.js";
import { submitLines } from "../pipeline/submit.js";
import { MAX_SCHEMA_DEPTH } from "../schemas/schemas.js";
import { nestsDeeperThan } from "../lines/values.js";
import { appRefusal, hasScope, LOOPBACK_GRANT, noRefusals, type Grant, type Refusals, type Scope, type Tokens } from "./tokens.js";
import { appOfLine } from "../lines/parse.js";
import { maskLine, sealLines } from "../schemas/sealing.js";
import { newScheduleId, parseDuration, parseWhen, scheduleDirective, servedSchedule } from "../pipeline/schedule.js";

export interface SidecarOptions {
  /** `HOST:PORT`, `[IPv6]:PORT` or `PORT` (on 127.0.0.1); port 0 takes a free one. */
  listen: string;
  /** Without tokens, the address must be a loopback one; closed with the sidecar. */
  tokens?: Tokens;
  /** Larger request bodies are refused with 413. */
  maxBodyBytes: number;
  /** How long POST /v1/changes waits for the lines' outcomes before answering 202 (queued). */
  waitMs: number;
  /** How often an idle event stream gets a keep-alive comment. */
  keepAliveMs: number;
  /** A request (headers and body) not received within this time is cut off. */
  requestTimeoutMs: number;
  log: Logger;
}

export interface Sidecar {
  /** Where it listens, e.g. `http://127.0.0.1:7070`. */
  url: string;
  /** Serve this pipeline (until then, everything but the probes answers 503). */
  attach(pipeline: Pipeline): void;
  close(): Promise<void>;
}

/** Parse `--http`'s address. */
export function parseListen(text: string): { host: string; port: number } {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d+)$/.exec(text) ?? /^()()(\d+)$/.exec(text);
  const port = Number(match?.[3]);
  if (!match || !Number.isInteger(port) || port > 65535) throw new CdpError("usage", `--http takes HOST:PORT or PORT, got "${text}"`);
  return { host: match[1] || match[2] || "127.0.0.1", port };
}

type Handler = (request: Request) => Promise<void> | void;
interface Request {
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  pipeline: Pipeline;
  /** What follows the route's prefix in the path (for /v1/config/...). */
  rest: string;
  /** What the request's token may do. */
  grant: Grant;
}
/**
 * A request as routed; its URL is made only when a handler asks (most reads need none). A class:
 * an object literal with a getter, made per request, cost each read ~15 µs (V8's slow path).
 */
class RoutedRequest implements Request {
  #url: URL | undefined;
  constructor(
    readonly req: IncomingMessage,
    readonly res: ServerResponse,
    readonly target: string,
    readonly pipeline: Pipeline,
    readonly rest: string,
    readonly grant: Grant,
  ) {}

  get url(): URL {
    this.#url ??= new URL(URL_BASE + this.target); // the target is a path (routed): not `//host…`
    return this.#url;
  }
}

interface Route {
  method: "GET" | "POST" | "DELETE";
  /** null: open to all (probes, the page). */
  scope: Scope | null;
  handle: Handler;
  /** Works before the pipeline is attached. */
  early?: boolean;
}

export async function startSidecar(options: SidecarOptions): Promise<Sidecar> {
  const { host, port } = parseListen(options.listen);
  if (!options.tokens && !isLoopback(host)) {
    throw new CdpError("usage", `refusing to serve on ${host} without --token-file: anyone who reaches it could read and change the configuration`);
  }
  const { log } = options;
  const page = await readFile(new URL("./dashboard.html", import.meta.url));
  let pipeline: Pipeline | undefined;
  let stream: EventStream | undefined;
  let recent: RecentChanges | undefined;
  let metrics: Registry | undefined;
  const configs = new ConfigCache();
  const refused = noRefusals();

  const routes: Record<string, Route | Route[]> = {
    "/": { method: "GET", scope: null, early: true, handle: ({ res }) => sendPage(res, page) },
    "/healthz": { method: "GET", scope: null, early: true, handle: ({ res }) => sendJson(res, 200, { status: "alive" }) },
    "/readyz": {
      method: "GET",
      scope: null,
      early: true,
      handle: ({ res }) => {
        const reason = pipeline ? pipeline.notReady() : "cdp is starting: reading the schemas and the journal";
        if (reason === undefined) sendJson(res, 200, { ready: true, revision: pipeline!.table.revision });
        else sendJson(res, 503, { ready: false, reason });
      },
    },
    "/metrics": {
      method: "GET",
      scope: "read",
      handle: async ({ res }) => {
        const text = await metrics!.metrics();
        res.writeHead(200, { "content-type": metrics!.contentType, "cache-control": "no-store" }).end(text);
      },
    },
    "/v1/config": {
      method: "GET",
      scope: "read",
      handle: ({ req, res, rest, pipeline, grant }) => {
        if (grant.secrets) log.info({ token: grant.name, path: req.url }, "audit: secrets read");
        configs.serve(req, res, rest, pipeline, grant);
      },
    },
    "/v1/events": { method: "GET", scope: "read", handle: (request) => openStream(request, stream!, options) },
    "/v1/history": { method: "GET", scope: "read", handle: (request) => serveHistory(request, recent!) },
    "/v1/rejections": {
      method: "GET",
      scope: "read",
      handle: async ({ res, url, pipeline, grant }) => {
        const limit = limitOf(url, 50);
        // a line that names no app is shown only to a token for every app
        const shown = (app: string | undefined) => (app === undefined ? grant.apps === undefined : grant.allows(app));
        sendJson(res, 200, await recentRejections(join(pipeline.dir, REJECTS_FILE), pipeline.schemas, limit, shown));
      },
    },
    "/v1/changes": {
      method: "POST",
      scope: "write",
      handle: async ({ req, res, url, pipeline, grant }) => {
        const type = req.headers["content-type"];
        // text/plain, or curl's default for --data-binary: the body is taken as lines either way
        if (type !== undefined && !/^(text\/plain|application\/x-www-form-urlencoded)\b/i.test(type)) {
          return sendError(res, 415, `send the change lines as text/plain, not ${type}`);
        }
        const body = await readBody(req, options.maxBodyBytes);
        if (body.length === 0) return sendError(res, 400, "the body holds no line: send change lines (app:key:value), one per line");
        if (!isUtf8(body)) return sendError(res, 400, "the body is not valid UTF-8");
        const given = body.toString("utf8").split("\n");
        refuseForeignApps(grant, given);
        // a secret value is sealed before it reaches the inbox
        const sealed = sealLines(given, pipeline.schemas, pipeline.sealing);
        if (url.searchParams.has("at") || url.searchParams.has("for")) return scheduleChanges({ req, res, url, pipeline, grant, rest: "" }, sealed, options);
        await sendSubmitted(res, pipeline, sealed.join("\n"), `http:${req.socket.remoteAddress ?? "?"}`, options.waitMs, whoAndWhy(req, grant));
      },
    },
    "/v1/rollback": { method: "POST", scope: "admin", handle: (request) => rollback(request, options) },
    // "self": the host that answers (the dashboard names it)
    "/v1/hosts": {
      method: "GET",
      scope: "read",
      handle: async ({ res, pipeline }) =>
        sendJson(
          res,
          200,
          (await pipeline.hosts()).map((host) => (host.host === pipeline.host ? { ...host, self: true } : host)),
        ),
    },
    "/v1/plan": { method: "POST", scope: "admin", handle: (request) => planSchemas(request, options) },
    "/v1/schedule": [
      {
        method: "GET",
        scope: "read",
        handle: ({ res, pipeline, grant }) =>
          sendJson(
            res,
            200,
            pipeline
              .schedules()
              .filter((entry) => refusalOfLines(grant, entry.lines) === undefined)
              .map((entry) => servedSchedule(entry, pipeline.schemas)),
          ),
      },
      { method: "DELETE", scope: "write", handle: (request) => cancelSchedule(request, options) },
    ],
    "/v1/token": { method: "GET", scope: "read", handle: ({ res, grant }) => sendJson(res, 200, grantJson(grant)) },
    "/v1/rollouts": [
      {
        method: "GET",
        scope: "read",
        handle: ({ res, pipeline, grant }) =>
          sendJson(
            res,
            200,
            pipeline
              .rollouts()
              .filter((rollout) => grant.allows(rollout.app))
              .map((rollout) => servedRollout(rollout, pipeline.schemas)),
          ),
      },
      { method: "POST", scope: "admin", handle: (request) => rolloutRequest(request, options) },
    ],
  };

  const { requestTimeoutMs } = options;
  const timeouts = { requestTimeout: requestTimeoutMs, headersTimeout: requestTimeoutMs, connectionsCheckingInterval: Math.min(1000, requestTimeoutMs / 4) };
  const server = createServer(
    { ...timeouts, keepAliveTimeout: 5_000 },
    routeRequests(routes, options, () => pipeline, refused),
  );
  // after Node's own 408 for a request begun but not received in time
  guardDescriptors(server, 2 * requestTimeoutMs + 1000, log);
  await listenOn(server, host, port, options.listen);
  const address = server.address() as AddressInfo;
  const url = `http://${address.family === "IPv6" ? `[${address.address}]` : address.address}:${address.port}`;
  log.info({ url, auth: options.tokens ? "bearer tokens" : "none (loopback only)" }, "sidecar listening");
  return {
    url,
    attach(attached) {
      stream = new EventStream(attached, { log, keepAliveMs: options.keepAliveMs });
      recent = new RecentChanges(attached, log);
      metrics = createMetrics(attached, stream, refused);
      pipeline = attached;
    },
    async close() {
      options.tokens?.close();
      stream?.close();
      recent?.close();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** Find the route, check the method, the origin and the token, then run the handler; errors become answers. */
function routeRequests(
  routes: Record<string, Route | Route[]>,
  options: SidecarOptions,
  attached: () => Pipeline | undefined,
  refused: Refusals,
): (req: IncomingMessage, res: ServerResponse) => void {
  const { log } = options;
  const byPath = new Map(Object.entries(routes).map(([path, route]) => [path, [route].flat()]));
  return (req, res) => {
    const target = req.url ?? "/";
    const pathname = pathOf(target);
    const failed = (error: unknown) => {
      if (error instanceof HttpError) {
        if (error.status === 403 && error.lacking) refused[error.lacking]++;
        return sendError(res, error.status, error.message);
      }
      if (error instanceof CdpError && error.code === "bootstrap") return sendError(res, 503, error.message); // the inbox cannot take lines
      log.error({ err: error, path: pathname }, "request failed");
      if (!res.headersSent) sendError(res, 500, "internal error (see cdp's log)");
      else res.destroy();
    };
    // a throw here would end cdp (it runs in the server's event): whatever a request does, it is answered.
    // Called, not wrapped in an async function: a promise per read cost the sidecar a third of its reads (in GC)
    try {
      if (pathname === undefined) throw new HttpError(400, `the request's target must be a path, e.g. /v1/config, got "${target.slice(0, 64)}"`);
      const prefix = pathname.startsWith("/v1/config/") ? "/v1/config" : pathname.startsWith("/v1/schedule/") ? "/v1/schedule" : pathname;
      const candidates = byPath.get(prefix) ?? [];
      if (candidates.length === 0) return sendError(res, 404, `no such endpoint: ${pathname}`);
      const route = candidates.find(({ method }) => req.method === method || (method === "GET" && req.method === "HEAD"));
      if (!route) {
        const methods = candidates.map(({ method }) => method);
        res.setHeader("allow", methods.flatMap((method) => (method === "GET" ? ["GET", "HEAD"] : [method])).join(", "));
        return sendError(res, 405, `${pathname} takes ${methods.join(" or ")}`);
      }
      const refusal = foreignRequest(req, !options.tokens);
      if (refusal) return sendError(res, 403, refusal);
      const grant = options.tokens ? options.tokens.grantOf(req.headers.authorization) : LOOPBACK_GRANT;
      if (route.scope) {
        if (!grant) {
          refused.token++;
          res.setHeader("www-authenticate", 'Bearer realm="cdp"');
          return sendError(res, 401, "a valid bearer token is required (Authorization: Bearer TOKEN)");
        }
        if (!hasScope(grant, route.scope)) {
          refused[route.scope]++;
          return sendError(res, 403, `the token "${grant.name}" has the ${grant.scope} scope: ${req.method} ${pathname} needs ${route.scope}`);
        }
        if (route.method !== "GET" && route.scope !== "read") log.info({ token: grant.name, method: req.method, path: pathname }, "audit: a change requested");
      }
      if (!attached() && !route.early) return sendError(res, 503, "cdp is starting: reading the schemas and the journal");
      const rest = prefix === pathname ? "" : pathname.slice(prefix.length + 1);
      route.handle(new RoutedRequest(req, res, target, attached()!, rest, grant ?? LOOPBACK_GRANT))?.catch(failed);
    } catch (error) {
      failed(error);
    }
  };
}

/** GET /v1/events[?app=A[&key=K]][&since=REV][&rejections=1]; Last-Event-ID takes precedence over since. */
async function openStream({ req, res, url, pipeline, grant }: Request, stream: EventStream, options: SidecarOptions): Promise<void> {
  const header = req.headers["last-event-id"];
  const given = (Array.isArray(header) ? header.join(",") : header) ?? url.searchParams.get("since") ?? undefined;
  // decimal digits only: Number() would read "0x10" as 16 and "1e3" as 1000
  if (given !== undefined && given !== "" && !/^\d{1,15}$/.test(given))
    throw new HttpError(400, `Last-Event-ID (or since) must be a revision number, got "${given}"`);
  const since = given === undefined || given === "" ? undefined : Number(given);
  const app = url.searchParams.get("app") ?? undefined;
  const key = url.searchParams.get("key") ?? undefined;
  if (key !== undefined && app === undefined) throw new HttpError(400, "a key filter needs an app: ?app=APP&key=KEY");
  if (app !== undefined) {
    refuseApps(grant, [app]);
    const schema = pipeline.schemas.get(app);
    if (!schema) throw new HttpError(404, `unknown app "${app}"`);
    const info = key === undefined ? undefined : schema.key(key.split("."));
    if (typeof info === "string") throw new HttpError(404, `${app}${info}`);
  }
  const rejections = ["1", "true", "yes"].includes(url.searchParams.get("rejections") ?? "");
  if (req.method === "HEAD") {
    // what a GET would start with, and no stream: a HEAD must end
    res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-store" });
    res.end();
    return;
  }
  if (grant.secrets) options.log.info({ token: grant.name, path: "/v1/events", app }, "audit: secrets read");
  await stream.open(res, since, { app, key, rejections, grant });
}

/** GET /v1/history[?app=A[&key=K]][&limit=N]: newest first, as `cdp history --json` prints it. */
async function serveHistory({ res, url, grant }: Request, recent: RecentChanges): Promise<void> {
  const app = url.searchParams.get("app");
  const key = url.searchParams.get("key");
  if (app !== null) refuseApps(grant, [app]);
  const selector = app === null ? undefined : key === null ? app : `${app}.${key}`;
  const limit = limitOf(url, 100);
  const entries = await recent.entries();
  const covered = grant.apps === undefined || app !== null ? entries : entries.filter((entry) => grant.allows(entry.app));
  sendJson(res, 200, historyJson(selectHistory(covered, selector, limit)));
}

/** POST /v1/rollback {"to": REV} or {"last": true}, optionally "dryRun": true. */
async function rollback({ req, res, pipeline, grant }: Request, options: SidecarOptions): Promise<void> {
  const request = await readJsonObject<{ to: unknown; last: unknown; dryRun: unknown }>(
    req,
    options.maxBodyBytes,
    'send JSON: {"to": REVISION} or {"last": true}',
  );
  const state = await replayJournal(pipeline.journalPath, pipeline.schemas, { history: true, validators: pipeline.validators });
  if ((request.to === undefined) === (request.last !== true)) throw new HttpError(400, 'give either "to": REVISION or "last": true');
  const revision = request.last === true ? state.revision - 1 : request.to;
  if (!Number.isInteger(revision)) throw new HttpError(400, `"to" must be a revision number, got ${JSON.stringify(request.to)}`);
  let lines: string[];
  try {
    lines = planRollback(state, pipeline.schemas, revision as number, pipeline.validators);
  } catch (error) {
    if (error instanceof CdpError) throw new HttpError(error.code === "refused" ? 409 : 400, error.message);
    throw error;
  }
  refuseForeignApps(grant, lines);
  const shown = lines.map((line) => maskLine(line, pipeline.schemas));
  if (lines.length === 0 || request.dryRun === true) {
    return sendJson(res, 200, { status: lines.length === 0 ? "unchanged" : "dry-run", revision: pipeline.table.revision, changes: shown });
  }
  const said = whoAndWhy(req, grant);
  await sendSubmitted(
    res,
    pipeline,
    sealLines(lines, pipeline.schemas, pipeline.sealing).join("\n"),
    `http-rollback:${req.socket.remoteAddress ?? "?"}`,
    options.waitMs,
    { ...said, reason: said.reason ?? "rollback" },
    shown,
  );
}

/**
 * POST /v1/rollouts: start one ({"hosts": [H…], "bake": S, "lines": [LINE…]} or "steps"/"every"),
 * or {"action": "abort" | "promote", "id"?: ID, "reason"?: T}; through the inbox, as cdp rollout does.
 */
async function rolloutRequest({ req, res, pipeline, grant }: Request, options: SidecarOptions): Promise<void> {
  const usage =
    'send JSON: {"hosts": ["H1"], "bake": SECONDS, "lines": ["app:key:value"]}, {"steps": [10, 50, 100], "every": SECONDS, "lines": […]}, or {"action": "abort" | "promote", "id": ID, "reason": TEXT}';
  const body = await readJsonObject<{
    action: unknown;
    id: unknown;
    reason: unknown;
    hosts: unknown;
    bake: unknown;
    steps: unknown;
    every: unknown;
    lines: unknown;
    for: unknown;
  }>(req, options.maxBodyBytes, usage);
  const action = body.action ?? "start";
  const reason = typeof body.reason === "string" ? body.reason : undefined;
  let request: RolloutRequest;
  if (action === "start") {
    const timing =
      body.steps === undefined
        ? { hosts: body.hosts as string[], bakeSeconds: body.bake as number }
        : { steps: body.steps as number[], everySeconds: body.every as number };
    if (Array.isArray(body.lines))
      refuseForeignApps(
        grant,
        body.lines.filter((line): line is string => typeof line === "string"),
      );
    const given = body.lines;
    const lines =
      Array.isArray(given) && given.every((line) => typeof line === "string") ? sealLines(given, pipeline.schemas, pipeline.sealing) : (given as string[]);
    const forMs = body.for === undefined ? undefined : typeof body.for === "string" ? parseDuration(body.for) : undefined;
    if (body.for !== undefined && forMs === undefined)
      throw new HttpError(400, `"for" takes a duration such as "90s", "30m", "2h", "1d", got ${JSON.stringify(body.for)}`);
    request = { start: { id: newRolloutId(), lines, ...timing, ...(forMs === undefined ? {} : { forMs }) } };
  } else if (action === "abort" || action === "promote") {
    const baking = pipeline
      .rollouts()
      .filter((rollout) => rollout.state === "baking" && grant.allows(rollout.app) && (body.id === undefined || rollout.id === body.id));
    if (baking.length !== 1)
      throw new HttpError(
        baking.length === 0 ? 404 : 400,
        baking.length === 0
          ? `no rollout${body.id === undefined ? "" : ` ${String(body.id)}`} is in progress`
          : `${baking.length} rollouts are in progress: say which with "id"`,
      );
    const id = baking[0]!.id;
    request = action === "abort" ? { abort: { id, ...(reason ? { reason } : {}) } } : { promote: { id } };
  } else throw new HttpError(400, usage);
  const said = whoAndWhy(req, grant);
  const { status, lines } = await submitLines(pipeline, rolloutDirective(request), options.waitMs, `http-rollout:${req.socket.remoteAddress ?? "?"}`, {
    ...said,
    ...(action === "start" && reason ? { reason } : {}),
  });
  const id = "start" in request ? request.start.id : "abort" in request ? request.abort.id : request.promote.id;
  const rollout = pipeline.rollouts().find((known) => known.id === id);
  if (status === "queued") return sendJson(res, 202, { status, id });
  if (lines[0]?.outcome !== "accepted") return sendError(res, 409, lines[0]?.reason ?? "refused");
  sendJson(res, action === "start" ? 201 : 200, rollout ? servedRollout(rollout, pipeline.schemas) : { id });
}

/** POST /v1/plan {"files": {"NAME.schema.json": SCHEMA, …}}: what taking them would do (nothing is written). */
async function planSchemas({ req, res, pipeline, grant }: Request, options: SidecarOptions): Promise<void> {
  const usage = 'send JSON: {"files": {"APP.schema.json": SCHEMA, …}} (the other apps keep their schemas)';
  const request = await readJsonObject<{ files: unknown }>(req, options.maxBodyBytes, usage);
  const files = request.files;
  if (typeof files !== "object" || files === null || Array.isArray(files) || Object.keys(files).length === 0) throw new HttpError(400, usage);
  const badName = Object.keys(files).find((name) => !/^[A-Za-z_][A-Za-z0-9_-]{0,63}\.schema\.json$/.test(name));
  if (badName !== undefined) throw new HttpError(400, `${JSON.stringify(badName)} is not a schema file name (APP.schema.json)`);
  refuseApps(
    grant,
    Object.keys(files).map((name) => name.slice(0, -".schema.json".length)),
  );
  const deep = Object.entries(files).find(([, schema]) => nestsDeeperThan(schema, MAX_SCHEMA_DEPTH));
  if (deep) throw new HttpError(400, `${deep[0]}: nested deeper than ${MAX_SCHEMA_DEPTH} levels`);
  const plan = await planFiles(pipeline, files as Record<string, unknown>);
  sendJson(res, plan.ok ? 200 : 409, plan);
}

/** Who makes a change over HTTP (the token's name, or the client's address without tokens), and why (X-Cdp-Reason). */
function whoAndWhy(req: IncomingMessage, grant: Grant): { by: string; reason?: string } {
  const by = grant.name || `http:${req.socket.remoteAddress ?? "?"}`;
  const header = req.headers["x-cdp-reason"];
  const reason = (Array.isArray(header) ? header.join(" ") : header)?.trim().slice(0, 1000);
  return reason ? { by, reason } : { by };
}

async function sendSubmitted(
  res: ServerResponse,
  pipeline: Pipeline,
  text: string,
  from: string,
  waitMs: number,
  said: { by: string; reason?: string },
  changes?: string[],
): Promise<void> {
  const { status, lines } = await submitLines(pipeline, text, waitMs, from, said);
  const code = status === "queued" ? 202 : lines.some((line) => line.outcome === "rejected" || line.outcome === "taken back") ? 422 : 200;
  sendJson(res, code, { status, revision: pipeline.table.revision, lines, ...(changes ? { changes } : {}) });
}

/** POST /v1/changes?at=TIME&for=DURATION: the lines as one schedule, judged by the watcher now (201 made, 200 applied for now, 422 refused). */
async function scheduleChanges({ req, res, url, pipeline, grant }: Request, lines: string[], options: SidecarOptions): Promise<void> {
  const atText = url.searchParams.get("at");
  const forText = url.searchParams.get("for");
  const at = atText === null ? undefined : parseWhen(atText);
  if (typeof at === "object") throw new HttpError(400, at.reason.replace("--at", "at"));
  if (at !== undefined && Date.parse(at) <= Date.now()) throw new HttpError(400, `at ${atText} is not in the future`);
  const forMs = forText === null ? undefined : parseDuration(forText);
  if (forText !== null && forMs === undefined) throw new HttpError(400, `for takes a duration such as 90s, 30m, 2h, 1d, got "${forText}"`);
  const given = lines.filter((line) => line.trim() !== "");
  const id = newScheduleId();
  const directive = scheduleDirective({ make: { id, lines: given, ...(at === undefined ? {} : { at }), ...(forMs === undefined ? {} : { forMs }) } });
  const { status, lines: outcomes } = await submitLines(pipeline, directive, options.waitMs, `http:${req.socket.remoteAddress ?? "?"}`, whoAndWhy(req, grant));
  const outcome = outcomes[0];
  if (status === "queued") return sendJson(res, 202, { status, id });
  if (outcome?.outcome === "rejected") return sendJson(res, 422, { status: "refused", id, reason: outcome.reason });
  const made = pipeline.schedules().find((entry) => entry.id === id);
  sendJson(res, outcome?.outcome === "accepted" ? 200 : 201, {
    status: outcome?.outcome === "accepted" ? "applied" : "scheduled",
    id,
    ...(outcome?.revision === undefined ? {} : { revision: outcome.revision }),
    ...(made ? { schedule: servedSchedule(made, pipeline.schemas) } : {}),
  });
}

/** DELETE /v1/schedule/ID: the schedule is cancelled through the inbox (404 when none is due). */
async function cancelSchedule({ req, res, rest, pipeline, grant }: Request, options: SidecarOptions): Promise<void> {
  const id = decodePathPart(rest);
  const entry = pipeline.schedules().find((due) => due.id === id);
  if (!entry) throw new HttpError(404, `no schedule ${id} is due`);
  refuseForeignApps(grant, entry.lines);
  const { status, lines } = await submitLines(
    pipeline,
    scheduleDirective({ cancel: { id } }),
    options.waitMs,
    `http:${req.socket.remoteAddress ?? "?"}`,
    whoAndWhy(req, grant),
  );
  if (status === "queued") return sendJson(res, 202, { status, id });
  if (lines[0]?.outcome === "rejected") return sendError(res, 409, lines[0].reason ?? "refused");
  sendJson(res, 200, { status: "cancelled", id });
}

/** A 403 unless the token covers each of these apps. */
function refuseApps(grant: Grant, apps: Iterable<string>): void {
  const refusal = appRefusal(grant, apps);
  if (refusal) throw new HttpError(403, refusal, "app");
}

/** A 403 unless the token covers every app these lines name (a line that names none is rejected as any other). */
function refuseForeignApps(grant: Grant, lines: readonly string[]): void {
  const refusal = refusalOfLines(grant, lines);
  if (refusal) throw new HttpError(403, refusal, "app");
}

/** Why the token may not touch the apps these lines name, or undefined when it may. */
function refusalOfLines(grant: Grant, lines: readonly string[]): string | undefined {
  return grant.apps === undefined ? undefined : appRefusal(grant, new Set(lines.map(appOfLine).filter((app) => app !== undefined)));
}

/** GET /v1/token: what the request's token may do (the dashboard shows only that). */
function grantJson(grant: Grant): object {
  return { name: grant.name || null, scope: grant.scope, apps: grant.apps ?? null, secrets: grant.secrets };
}
