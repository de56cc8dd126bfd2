// The sidecar's HTTP plumbing, apart from its routes: guards against what clients can do to cdp
// (take its descriptors, come from another origin or a rebound name), errors an operator's request
// can cause, bodies read within a limit, and answers.
import { readFileSync } from "node:fs";
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { Socket } from "node:net";
import type { Logger } from "pino";
import { CdpError } from "../errors.js";
import type { Lacking } from "./tokens.js";

export const isLoopback = (host: string) => host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);

/** Descriptors kept for the pipeline (inbox files, journal, cdp.rej, etcd) whatever the clients do. */
const RESERVED_DESCRIPTORS = 128;

/**
 * Connections must never take the descriptors the inbox and the journal need: 1,100 idle
 * connections under a limit of 1,024 made opening cdp.new fail (EMFILE) and cdp exit 3. So the
 * server takes at most the limit less a reserve, and a connection that has sent nothing in time
 * is closed (Node closes only requests that have begun). Checked per connection, not per
 * request: a listener on every request cost reads.
 */
export function guardDescriptors(server: Server, firstRequestMs: number, log: Logger): void {
  server.maxConnections = Math.max(16, openFileLimit() - RESERVED_DESCRIPTORS);
  server.on("connection", (socket: Socket) => {
    const silent = setTimeout(() => socket.bytesRead === 0 && socket.destroy(), firstRequestMs).unref();
    socket.once("close", () => clearTimeout(silent));
  });
  let warned = 0;
  server.on("drop", () => {
    if (Date.now() - warned < 10_000) return; // one line per 10 s under a flood
    warned = Date.now();
    log.warn({ maxConnections: server.maxConnections }, "refusing connections: the sidecar holds as many as the descriptor limit allows");
  });
}

/** The soft limit on open files (RLIMIT_NOFILE), from /proc; 1024 where it cannot be read. */
function openFileLimit(): number {
  try {
    const limit = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync("/proc/self/limits", "utf8"))?.[1];
    return limit === undefined ? 1024 : limit === "unlimited" ? 1 << 20 : Number(limit);
  } catch {
    return 1024;
  }
}

/**
 * A web page the operator visits must not use the sidecar through their browser: a change from
 * another origin is refused (CSRF), and without tokens the Host must be a loopback name (DNS rebinding).
 */
export function foreignRequest(req: IncomingMessage, loopbackOnly: boolean): string | undefined {
  const host = req.headers.host ?? "";
  if (loopbackOnly && !loopbackHost(host)) return `refused: Host "${host}" is not a loopback address`;
  const origin = req.headers.origin;
  if ((req.method === "POST" || req.method === "DELETE") && origin !== undefined && origin !== `http://${host}`)
    return `refused: a change from another origin (${origin})`;
  return undefined;
}

// a client sends the same Host with each request: the last one's answer is kept (one, so that no
// client can grow it)
let lastHost: { host: string; loopback: boolean } | undefined;

function loopbackHost(host: string): boolean {
  if (lastHost?.host !== host) lastHost = { host, loopback: isLoopback(host.replace(/:\d+$/, "").replace(/^\[(.*)\]$/, "$1")) };
  return lastHost.loopback;
}

/** What a request's target (its path and query) is read against. */
export const URL_BASE = "http://cdp.invalid";

/**
 * A request target's path as `new URL` reads it after cdp's origin, when that is plainly its
 * text: letters, digits and `_-.~/` with no dot segment, up to a `?`. Otherwise undefined (ask
 * `new URL`, which cost the sidecar a tenth of its reads when made for each).
 */
export function plainPath(target: string): string | undefined {
  const end = target.indexOf("?");
  const path = end === -1 ? target : target.slice(0, end);
  return /^\/[\w\-/.~]*$/.test(path) && !/\/\.\.?(?:\/|$)/.test(path) ? path : undefined;
}

/**
 * A request target's path as cdp routes it: at once when plain, else as `new URL` reads it after
 * cdp's own origin (read alone, `//host:port/…` would name a host, and an invalid one threw in
 * the server's event: a request ended cdp). Undefined for a target that is not a path (`*`,
 * `http://…`).
 */
export function pathOf(target: string): string | undefined {
  const plain = plainPath(target);
  if (plain !== undefined || !target.startsWith("/")) return plain;
  try {
    return new URL(URL_BASE + target).pathname;
  } catch {
    return undefined;
  }
}

/** An operator's mistake in a request: answered with its status and message. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    /** For a 403 that a token's scope caused: what it lacks (counted in /metrics). */
    readonly lacking?: Lacking,
  ) {
    super(message);
  }
}

export function decodePathPart(part: string): string {
  if (!part.includes("%")) return part;
  try {
    return decodeURIComponent(part);
  } catch {
    throw new HttpError(400, `malformed percent-escape in the path: "${part.slice(0, 64)}"`);
  }
}

export function matchesEtag(header: string | undefined, etag: string): boolean {
  return header?.split(",").some((tag) => tag.trim() === "*" || tag.trim().replace(/^W\//, "") === etag) === true;
}

export function limitOf(url: URL, fallback: number): number {
  const text = url.searchParams.get("limit");
  if (text === null) return fallback;
  const limit = /^\d{1,6}$/.test(text) ? Number(text) : NaN;
  if (!Number.isInteger(limit) || limit < 1 || limit > 100_000) throw new HttpError(400, `limit must be a whole number from 1 to 100000, got "${text}"`);
  return limit;
}

export async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  if (Number(req.headers["content-length"] ?? 0) > limit) throw new HttpError(413, `the body is over the limit of ${limit} bytes`);
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    length += chunk.length;
    if (length > limit) throw new HttpError(413, `the body is over the limit of ${limit} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** A JSON object body; anything else (not JSON, `null`, an array, a string) is a 400 saying what to send. */
export async function readJsonObject<T extends object>(req: IncomingMessage, limit: number, usage: string): Promise<Partial<T>> {
  const body = await readBody(req, limit);
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString("utf8"));
  } catch {
    throw new HttpError(400, usage);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new HttpError(400, usage);
  return parsed as Partial<T>;
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json; charset=utf-8", "cache-control": "no-store" }).end(JSON.stringify(body));
}

export function sendError(res: ServerResponse, status: number, message: string): void {
  if (status === 413) res.setHeader("connection", "close"); // the rest of the body is not read
  sendJson(res, status, { error: message });
}

export function sendPage(res: ServerResponse, page: Buffer): void {
  res.writeHead(200, {
    "content-type": "text/html; charset=utf-8",
    "cache-control": "no-cache",
    "content-security-policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
  });
  res.end(page);
}

/** Listen, or say why not in an operator's words. */
export async function listenOn(server: Server, host: string, port: number, listen: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    server.once("error", (error: NodeJS.ErrnoException) => {
      const why =
        error.code === "EADDRINUSE"
          ? "the address is in use (another cdp, or another server?)"
          : error.code === "EACCES"
            ? "permission denied (ports below 1024 need privileges)"
            : (error.code ?? error.message);
      reject(new CdpError(error.code === "EADDRINUSE" || error.code === "EACCES" ? "busy" : "usage", `cannot listen on ${listen}: ${why}`));
    });
    server.listen(port, host, () => resolve());
  });
}
