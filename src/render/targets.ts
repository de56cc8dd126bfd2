// Render files (`cdp watch --render FILE`): which app's config is written to which file, how, and
// the service's own commands that check, reload and probe it. Everything an operator can get
// wrong here is found at start (exit 2), never at the first change.
import { execFileSync } from "node:child_process";
import { readFile, realpath, stat } from "node:fs/promises";
import { basename, dirname, isAbsolute, join, resolve, sep } from "node:path";
import mustache from "mustache";
import { CdpError } from "../errors.js";
import type { Schemas } from "../schemas/schemas.js";
import { isObject } from "../lines/values.js";

export const FORMATS = ["json", "yaml", "toml", "env", "properties"] as const;
export type Format = (typeof FORMATS)[number];

export interface RenderTarget {
  app: string;
  /** Where the file goes (absolute); also the target's name in metrics and reasons. */
  dest: string;
  /** A mustache template's text, or a format written by its serializer. */
  template?: string;
  format?: Format;
  mode: number;
  owner?: { uid: number; gid: number };
  /** argv arrays, run without a shell; only {staged} and {dest} are substituted. */
  check?: string[];
  reload?: string[];
  health?: string[];
  healthTimeoutMs: number;
  /** How long after the reload the first probe runs: a reload takes effect a moment later (nginx's old workers answer meanwhile). */
  healthDelayMs: number;
  /** How long one command may run. */
  commandTimeoutMs: number;
}

const FIELDS = new Set([
  "app",
  "template",
  "format",
  "dest",
  "mode",
  "owner",
  "check",
  "reload",
  "health",
  "healthTimeoutMs",
  "healthDelayMs",
  "commandTimeoutMs",
]);

/**
 * Read and check every render file: the targets, in order. Throws a CdpError ("bootstrap") naming
 * the file and the target. `cdpDirs` (the data and schema directories) are never a target's place:
 * a dest there would overwrite the journal or a schema.
 */
export async function loadRenderFiles(paths: readonly string[], schemas: Schemas, cdpDirs: readonly string[] = []): Promise<RenderTarget[]> {
  const ownDirs = await Promise.all(cdpDirs.map((dir) => realpath(dir).catch(() => resolve(dir))));
  const targets: RenderTarget[] = [];
  for (const path of paths) {
    let text: string;
    try {
      text = await readFile(path, "utf8");
    } catch (error) {
      throw new CdpError("bootstrap", `--render ${path}: cannot read it: ${(error as Error).message}`);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (error) {
      throw new CdpError("bootstrap", `--render ${path}: not valid JSON: ${(error as Error).message}`);
    }
    if (!isObject(parsed) || !Array.isArray(parsed.targets) || parsed.targets.length === 0)
      throw new CdpError("bootstrap", `--render ${path}: expected {"targets": [{"app": …, "dest": …}, …]}`);
    for (const [index, target] of parsed.targets.entries()) targets.push(await readTarget(path, index, target, schemas, ownDirs));
  }
  const dests = targets.map(({ dest }) => dest);
  const twice = dests.find((dest, i) => dests.indexOf(dest) !== i);
  if (twice) throw new CdpError("bootstrap", `--render: two targets write ${twice}`);
  return targets;
}

async function readTarget(path: string, index: number, given: unknown, schemas: Schemas, ownDirs: readonly string[]): Promise<RenderTarget> {
  const fail = (reason: string) => new CdpError("bootstrap", `--render ${path}: targets[${index}]: ${reason}`);
  if (!isObject(given)) throw fail("must be an object");
  const unknown = Object.keys(given).find((key) => !FIELDS.has(key));
  if (unknown) throw fail(`unknown field "${unknown}" (fields: ${[...FIELDS].join(", ")})`);
  const { app, template, format, dest } = given;
  if (typeof app !== "string" || !schemas.has(app))
    throw fail(`"app" must name an app with a schema (${[...schemas.keys()].join(", ")}), got ${JSON.stringify(app)}`);
  if ((template === undefined) === (format === undefined)) throw fail(`give either "template" (a file) or "format" (${FORMATS.join(", ")})`);
  if (format !== undefined && !FORMATS.includes(format as Format)) throw fail(`"format" must be one of ${FORMATS.join(", ")}, got ${JSON.stringify(format)}`);
  if (typeof dest !== "string" || dest === "") throw fail(`"dest" must be a file path`);
  const base = dirname(resolve(path));
  const target: RenderTarget = {
    app,
    dest: resolve(base, dest),
    mode: readMode(given.mode, fail),
    healthTimeoutMs: readMs(given.healthTimeoutMs, 10_000, "healthTimeoutMs", fail),
    healthDelayMs: readMs(given.healthDelayMs, 500, "healthDelayMs", fail),
    commandTimeoutMs: readMs(given.commandTimeoutMs, 10_000, "commandTimeoutMs", fail),
  };
  const directory = await stat(dirname(target.dest)).catch(() => undefined);
  if (!directory?.isDirectory()) throw fail(`the directory of "dest" (${dirname(target.dest)}) does not exist`);
  // where the file really lands, through any link on the way
  const place = join(await realpath(dirname(target.dest)), basename(target.dest));
  const own = ownDirs.find((dir) => place === dir || place.startsWith(`${dir}${sep}`));
  if (own)
    throw fail(
      `"dest" (${target.dest}) is inside cdp's own directory ${own}: rendering there would overwrite cdp's files; put it where the service reads its config`,
    );
  if ((await stat(target.dest).catch(() => undefined))?.isDirectory()) throw fail(`"dest" (${target.dest}) is a directory: name the file to write in it`);
  if (format !== undefined) target.format = format as Format;
  if (template !== undefined)
    target.template = await readTemplate(typeof template === "string" ? (isAbsolute(template) ? template : join(base, template)) : "", fail);
  for (const name of ["check", "reload", "health"] as const) {
    const command = given[name];
    if (command === undefined) continue;
    if (!Array.isArray(command) || command.length === 0 || !command.every((word) => typeof word === "string"))
      throw fail(`"${name}" must be a command as an array of strings (run without a shell), e.g. ["nginx", "-t"]`);
    target[name] = command as string[];
  }
  if (given.owner !== undefined) target.owner = readOwner(given.owner, fail);
  return target;
}

async function readTemplate(path: string, fail: (reason: string) => CdpError): Promise<string> {
  if (path === "") throw fail(`"template" must be a file path (relative to the render file)`);
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    throw fail(`cannot read the template ${path}: ${(error as Error).message}`);
  }
  try {
    mustache.parse(text);
  } catch (error) {
    throw fail(`the template ${path} is not valid: ${(error as Error).message}`);
  }
  return text;
}

function readMode(mode: unknown, fail: (reason: string) => CdpError): number {
  if (mode === undefined) return 0o644;
  if (typeof mode !== "string" || !/^0?[0-7]{3}$/.test(mode)) throw fail(`"mode" must be octal digits as a string, e.g. "0644", got ${JSON.stringify(mode)}`);
  return Number.parseInt(mode, 8);
}

/** A command's time, a probe's or a delay: at most an hour (a timer takes at most ~24.8 days; longer is a typo). */
const MAX_MS = 3_600_000;

function readMs(value: unknown, fallback: number, name: string, fail: (reason: string) => CdpError): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isInteger(value) || value <= 0 || value > MAX_MS) {
    throw fail(`"${name}" must be a whole number of milliseconds from 1 to ${MAX_MS} (an hour), got ${JSON.stringify(value)}`);
  }
  return value;
}

// "USER", "USER:GROUP" or numbers; names as the system resolves them (id: NSS, LDAP …), once, at start
function readOwner(owner: unknown, fail: (reason: string) => CdpError): { uid: number; gid: number } {
  const match = typeof owner === "string" ? /^([A-Za-z0-9_.][A-Za-z0-9_.-]*)(?::([A-Za-z0-9_.][A-Za-z0-9_.-]*))?$/.exec(owner) : null;
  if (!match) throw fail(`"owner" must be "USER" or "USER:GROUP" (names or numbers), got ${JSON.stringify(owner)}`);
  const [, user, group] = match as unknown as [string, string, string | undefined];
  const lookUp = (flag: "-u" | "-g", name: string, what: string): number => {
    if (/^\d+$/.test(name)) return Number(name);
    try {
      return Number(execFileSync("id", [flag, name], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim());
    } catch {
      throw fail(`"owner": no ${what} "${name}" on this system`);
    }
  };
  const uid = lookUp("-u", user, "user");
  // a group name is looked up in the group database, not as a user's
  const gid = group === undefined ? lookUp("-g", user, "user") : /^\d+$/.test(group) ? Number(group) : groupId(group, fail);
  return { uid, gid };
}

function groupId(name: string, fail: (reason: string) => CdpError): number {
  try {
    const entry = execFileSync("getent", ["group", name], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
    return Number(entry.split(":")[2]);
  } catch {
    throw fail(`"owner": no group "${name}" on this system`);
  }
}
