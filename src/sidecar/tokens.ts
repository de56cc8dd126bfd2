// Who may use the sidecar: bearer tokens read from a file, each with a scope. Tokens are
// compared as SHA-256 digests with crypto.timingSafeEqual (equal lengths, no early exit), so
// neither a token's length nor its first differing byte shows in the response time.
import { createHash, timingSafeEqual } from "node:crypto";
import { readFile, stat } from "node:fs/promises";
import { CdpError } from "../errors.js";

/** read: configuration, events, history, metrics; write: also changes and rollbacks. */
export type Scope = "read" | "write";

export interface Tokens {
  /** The scope the request's `Authorization: Bearer` token grants, or undefined for none. */
  scopeOf(authorization: string | undefined): Scope | undefined;
  /** The name the token file gives the request's token (recorded as who made a change). */
  nameOf(authorization: string | undefined): string | undefined;
}

const MIN_LENGTH = 16;

/**
 * Read a token file: one token per line as `SCOPE TOKEN [NAME]` (scope `read` or `write`; the name
 * says who uses it, and is recorded with each change made with it: default `token-LINE`); blank
 * lines and `#` comments are ignored. A malformed file stops start-up with file:line and why.
 */
export async function readTokenFile(path: string): Promise<Tokens & { warning?: string }> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    throw new CdpError("usage", `cannot read the token file ${path}: ${(error as Error).message}`);
  }
  const entries: { digest: Buffer; scope: Scope; name: string }[] = [];
  for (const [index, raw] of text.split("\n").entries()) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const [scope, token, name, ...rest] = line.split(/\s+/);
    const where = `${path}:${index + 1}`;
    if (scope !== "read" && scope !== "write")
      throw new CdpError("usage", `${where}: expected "read TOKEN [NAME]" or "write TOKEN [NAME]", got scope "${scope}"`);
    if (token === undefined || rest.length > 0)
      throw new CdpError("usage", `${where}: expected "${scope} TOKEN [NAME]" (one token, no spaces, then an optional name)`);
    if (token.length < MIN_LENGTH) throw new CdpError("usage", `${where}: a token must have at least ${MIN_LENGTH} characters`);
    if (name !== undefined && !/^[\w.@-]{1,64}$/.test(name))
      throw new CdpError("usage", `${where}: a token's name is letters, digits, '_', '.', '@' or '-', at most 64, got "${name}"`);
    entries.push({ digest: digest(token), scope, name: name ?? `token-${index + 1}` });
  }
  if (entries.length === 0) throw new CdpError("usage", `the token file ${path} holds no token`);
  const mode = (await stat(path)).mode & 0o777;
  return {
    warning: (mode & 0o077) === 0 ? undefined : `the token file ${path} is readable by group or others (mode ${mode.toString(8)}): chmod 600 it`,
    scopeOf(authorization) {
      return matching(entries, authorization)?.scope;
    },
    nameOf(authorization) {
      return matching(entries, authorization)?.name;
    },
  };
}

/** The entry of the request's token (the write one where a token is listed twice); every entry is compared. */
function matching<T extends { digest: Buffer; scope: Scope }>(entries: T[], authorization: string | undefined): T | undefined {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? "");
  if (!match) return undefined;
  const presented = digest(match[1]!);
  let granted: T | undefined;
  for (const entry of entries) {
    if (timingSafeEqual(presented, entry.digest) && granted?.scope !== "write") granted = entry;
  }
  return granted;
}

const digest = (token: string) => createHash("sha256").update(token).digest();
