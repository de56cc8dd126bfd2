// Who may use the sidecar: bearer tokens read from a file, each with a scope, the apps it covers
// and whether it may see secret values. Tokens are compared as SHA-256 digests with
// crypto.timingSafeEqual (equal lengths, no early exit), so neither a token's length nor its first
// differing byte shows in the response time. The file is read again when it changes.
import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync, statSync, unwatchFile, watchFile } from "node:fs";
import type { Logger } from "pino";
import { CdpError } from "../errors.js";

/** read: configs, events, history, rejections; write: also changes; admin: also rollbacks, rollouts, plans. */
export type Scope = "read" | "write" | "admin";

const RANK: Record<Scope, number> = { read: 0, write: 1, admin: 2 };

/** What a refused request lacked: a (known) token, a scope, an app or `secrets`. */
export type Lacking = "token" | Scope | "app" | "secrets";
export type Refusals = Record<Lacking, number>;
export const noRefusals = (): Refusals => ({ token: 0, read: 0, write: 0, admin: 0, app: 0, secrets: 0 });

/** What a request may do: the token's name, its scope, its apps and whether it sees secret values. */
export interface Grant {
  /** Who, in history and in the audit log ("" when the sidecar takes no tokens). */
  name: string;
  scope: Scope;
  /** The apps it covers as written (`*` globs), or undefined for every app. */
  apps: readonly string[] | undefined;
  secrets: boolean;
  /** Whether it covers this app. */
  allows(app: string): boolean;
}

/** Without a token file (loopback only): everything but secret values. */
export const LOOPBACK_GRANT: Grant = { name: "", scope: "admin", apps: undefined, secrets: false, allows: () => true };

/** Whether `grant` has `scope` (or one above it). */
export const hasScope = (grant: Grant, scope: Scope): boolean => RANK[grant.scope] >= RANK[scope];

/** Why `grant` may not touch these apps (the first it lacks), or undefined when it may. */
export function appRefusal(grant: Grant, apps: Iterable<string>): string | undefined {
  for (const app of apps) {
    if (!grant.allows(app)) return `the token "${grant.name}" does not cover app "${app}" (its apps: ${grant.apps!.join(", ")})`;
  }
  return undefined;
}

export interface Tokens {
  /** What the request's `Authorization: Bearer` token grants, or undefined for no (known) token. */
  grantOf(authorization: string | undefined): Grant | undefined;
  /** Stop following the file. */
  close(): void;
}

interface Entry extends Grant {
  digest: Buffer;
}

const MIN_LENGTH = 16;
const USAGE = '"read|write|admin TOKEN NAME [apps=APP,GLOB*] [secrets]"';

/**
 * The tokens of a token file's text: one per line as `SCOPE TOKEN [NAME] [apps=A,B*] [secrets]`
 * (the name says who uses it, and is recorded with each change made with it: default
 * `token-LINE`); blank lines and `#` comments are ignored. A malformed line is a CdpError naming
 * `where`:line and why.
 */
export function parseTokens(text: string, where: string): Entry[] {
  const entries: Entry[] = [];
  for (const [index, raw] of text.split("\n").entries()) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const at = `${where}:${index + 1}`;
    const [scope, token, ...words] = line.split(/\s+/);
    if (scope !== "read" && scope !== "write" && scope !== "admin") throw new CdpError("usage", `${at}: expected ${USAGE}, got scope "${scope}"`);
    if (token === undefined) throw new CdpError("usage", `${at}: expected ${USAGE}: the token is missing`);
    if (token.length < MIN_LENGTH) throw new CdpError("usage", `${at}: a token must have at least ${MIN_LENGTH} characters`);
    const name = words[0] !== undefined && !isOption(words[0]) ? words.shift()! : `token-${index + 1}`;
    if (!/^[\w.@-]{1,64}$/.test(name)) throw new CdpError("usage", `${at}: a token's name is letters, digits, '_', '.', '@' or '-', at most 64, got "${name}"`);
    let apps: string[] | undefined;
    let secrets = false;
    for (const word of words) {
      if (word === "secrets" && !secrets) secrets = true;
      else if (word.startsWith("apps=") && apps === undefined) apps = appPatterns(word.slice(5), at);
      else throw new CdpError("usage", `${at}: expected ${USAGE}, got "${word}" after the token${isOption(word) ? " (given twice)" : ""}`);
    }
    entries.push({ digest: digest(token), scope, name, apps, secrets, allows: matcher(apps) });
  }
  return entries;
}

const isOption = (word: string) => word === "secrets" || word.startsWith("apps=");

function appPatterns(list: string, at: string): string[] {
  const patterns = list.split(",");
  for (const pattern of patterns) {
    if (!/^[A-Za-z0-9_*-]{1,64}$/.test(pattern)) throw new CdpError("usage", `${at}: apps= takes app names and * globs separated by commas, got "${list}"`);
  }
  return patterns;
}

function matcher(patterns: string[] | undefined): (app: string) => boolean {
  if (patterns === undefined || patterns.includes("*")) return () => true;
  const regex = new RegExp(`^(?:${patterns.map((pattern) => pattern.replaceAll("-", "\\-").replaceAll("*", ".*")).join("|")})$`);
  return (app) => regex.test(app);
}

/**
 * Read a token file and follow it: when it changes it is read again; a malformed version is
 * refused (logged, the tokens before it stay). A malformed file at start is a CdpError (exit 2).
 */
export function loadTokenFile(path: string, log: Logger): Tokens {
  let entries = readTokens(path, log);
  const reload = (now: { mtimeMs: number; ino: number; size: number }, before: { mtimeMs: number; ino: number; size: number }) => {
    if (now.mtimeMs === before.mtimeMs && now.ino === before.ino && now.size === before.size) return;
    try {
      entries = readTokens(path, log);
      log.info({ file: path, tokens: entries.length }, "the token file changed: its tokens are in force");
    } catch (error) {
      log.error({ file: path }, `the token file is refused, the tokens before it stay: ${(error as Error).message}`);
    }
  };
  watchFile(path, { interval: 500, persistent: false }, reload);
  return {
    grantOf: (authorization) => matching(entries, authorization),
    close: () => unwatchFile(path, reload),
  };
}

function readTokens(path: string, log: Logger): Entry[] {
  let text: string;
  let mode: number;
  try {
    text = readFileSync(path, "utf8");
    mode = statSync(path).mode & 0o777;
  } catch (error) {
    throw new CdpError("usage", `cannot read the token file ${path}: ${(error as Error).message}`);
  }
  const entries = parseTokens(text, path);
  if (entries.length === 0) throw new CdpError("usage", `the token file ${path} holds no token`);
  if ((mode & 0o077) !== 0) log.warn(`the token file ${path} is readable by group or others (mode ${mode.toString(8)}): chmod 600 it`);
  return entries;
}

/** The entry of the request's token (the one of highest scope where a token is listed twice); every entry is compared. */
function matching(entries: Entry[], authorization: string | undefined): Entry | undefined {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? "");
  if (!match) return undefined;
  const presented = digest(match[1]!);
  let granted: Entry | undefined;
  for (const entry of entries) {
    if (timingSafeEqual(presented, entry.digest) && (granted === undefined || RANK[entry.scope] > RANK[granted.scope])) granted = entry;
  }
  return granted;
}

const digest = (token: string) => createHash("sha256").update(token).digest();
