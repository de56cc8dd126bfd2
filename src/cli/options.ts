// The `cdp` command's options: flags, then CDP_* environment variables; and the checks on them
// that answer an operator's typo in one sentence (with "did you mean").
import { createRequire } from "node:module";
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { parseArgs, type ParseArgsConfig } from "node:util";
import { pino, type Logger } from "pino";
import { CdpError, TIMER_MAX_MS } from "../errors.js";

export { TIMER_MAX_MS };
import type { ClusterOptions, HttpOptions } from "../index.js";

export const OPTIONS = {
  dir: { type: "string" },
  schemas: { type: "string" },
  "max-line-bytes": { type: "string" },
  "poll-interval": { type: "string" },
  "poll-only": { type: "boolean" },
  "max-outage": { type: "string" },
  "max-outages": { type: "string" },
  "outage-window": { type: "string" },
  "log-level": { type: "string" },
  pretty: { type: "boolean" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean" },
  limit: { type: "string" },
  json: { type: "boolean" },
  to: { type: "string" },
  last: { type: "boolean" },
  "dry-run": { type: "boolean" },
  "show-secrets": { type: "boolean" },
  reason: { type: "string" },
  wait: { type: "boolean" },
  "no-wait": { type: "boolean" },
  "wait-timeout": { type: "string" },
  keep: { type: "string" },
  "keep-history": { type: "string" },
  "compact-after": { type: "string" },
  http: { type: "string" },
  "token-file": { type: "string" },
  "http-max-body": { type: "string" },
  "http-wait": { type: "string" },
  "http-keepalive": { type: "string" },
  "http-timeout": { type: "string" },
  cluster: { type: "string" },
  "cluster-prefix": { type: "string" },
  "cluster-host": { type: "string" },
  "cluster-user": { type: "string" },
  "cluster-password-file": { type: "string" },
  "cluster-ca": { type: "string" },
  "cluster-cert": { type: "string" },
  "cluster-key": { type: "string" },
  "fleet-downgrade": { type: "boolean" },
  render: { type: "string", multiple: true },
  hosts: { type: "string" },
  bake: { type: "string" },
  steps: { type: "string" },
  every: { type: "string" },
  id: { type: "string" },
  app: { type: "string" },
  "secrets-key": { type: "string" },
  at: { type: "string" },
  for: { type: "string" },
  "new-key": { type: "string" },
} satisfies ParseArgsConfig["options"];

export type Values = {
  [K in keyof typeof OPTIONS]?: (typeof OPTIONS)[K] extends { multiple: true } ? string[] : (typeof OPTIONS)[K]["type"] extends "boolean" ? boolean : string;
};

export function parseCommand(args: string[]): { values: Values; positionals: string[] } {
  let parsed: { values: Values; positionals: string[] };
  try {
    parsed = parseArgs({ args, options: OPTIONS, allowPositionals: true, strict: true }) as { values: Values; positionals: string[] };
  } catch (error) {
    throw new CdpError("usage", optionError(error as Error & { code?: string }));
  }
  return { values: { ...fromEnvironment(), ...definedOnly(parsed.values) }, positionals: parsed.positionals };
}

/** parseArgs's own words ("Unknown option '--x'. To specify a positional argument …") made short, with a suggestion. */
function optionError(error: Error & { code?: string }): string {
  const unknown = /^Unknown option '([^']+)'/.exec(error.message);
  if (unknown) {
    const name = unknown[1]!;
    return `unknown option ${name}${didYouMean(name.replace(/^-+/, ""), Object.keys(OPTIONS), "--")}`;
  }
  const missing = /^Option '(?:-\w, )?(--[\w-]+) <value>' argument missing/.exec(error.message);
  if (missing) return `${missing[1]} needs a value`;
  if (error.code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE") return error.message.replace(/^Option '(?:-\w, )?(--[\w-]+)[^']*'/, "$1");
  return error.message;
}

/** " (did you mean X?)" for the known name closest to `given`, when one is close. */
export function didYouMean(given: string, known: string[], prefix = ""): string {
  let best: { name: string; distance: number } | undefined;
  for (const name of known) {
    const distance = editDistance(given, name);
    if (!best || distance < best.distance) best = { name, distance };
  }
  return best && best.distance <= Math.max(1, Math.floor(given.length / 3)) ? ` (did you mean ${prefix}${best.name}?)` : "";
}

// Edits, with a swap of neighbours counting as one ("wacth" is one edit from "watch").
function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i]![j] = Math.min(d[i]![j]!, d[i - 2]![j - 2]! + 1);
    }
  }
  return d[a.length]![b.length]!;
}

/** CDP_NAME for each option --NAME (CDP_MAX_LINE_BYTES for --max-line-bytes); flags win. */
export function environmentName(option: string): string {
  // it names a file, not the key itself
  if (option === "secrets-key" || option === "new-key") return `CDP_${option.toUpperCase().replace(/-/g, "_")}_FILE`;
  return `CDP_${option.toUpperCase().replace(/-/g, "_")}`;
}

function fromEnvironment(): Values {
  const values: Record<string, string | boolean> = {};
  for (const [name, option] of Object.entries(OPTIONS)) {
    if (name === "help" || name === "version") continue;
    const text = process.env[environmentName(name)];
    if (text === undefined || text === "") continue;
    if ("multiple" in option)
      values[name] = text.split(",") as unknown as string; // CDP_RENDER=a.json,b.json
    else if (option.type === "string") values[name] = text;
    else if (/^(1|true|yes|on)$/i.test(text)) values[name] = true;
    else if (!/^(0|false|no|off)$/i.test(text)) throw new CdpError("usage", `${environmentName(name)} is a switch: 1 or 0, got "${text}"`);
  }
  return values as Values;
}

function definedOnly(values: Values): Values {
  return Object.fromEntries(Object.entries(values).filter(([, value]) => value !== undefined)) as Values;
}

export function required(values: Values, name: "dir" | "schemas"): string {
  const value = values[name];
  if (!value) throw new CdpError("usage", `--${name} is required (or ${environmentName(name)})`);
  return resolve(value);
}

type NumberOption =
  | "max-line-bytes"
  | "poll-interval"
  | "max-outage"
  | "max-outages"
  | "outage-window"
  | "limit"
  | "keep"
  | "keep-history"
  | "compact-after"
  | "http-max-body"
  | "http-wait"
  | "http-keepalive"
  | "http-timeout"
  | "wait-timeout"
  | "bake"
  | "every";

export function positiveInteger(values: Values, name: NumberOption, fallback: number, least = 1, most = Number.MAX_SAFE_INTEGER): number {
  const text = values[name];
  if (text === undefined) return fallback;
  const value = /^\d{1,16}$/.test(text) ? Number(text) : NaN; // not "0x10" or "1e3"
  if (!Number.isInteger(value) || value < least || value > most) {
    const range = most === Number.MAX_SAFE_INTEGER ? "" : ` up to ${most}`;
    throw new CdpError("usage", `--${name} must be a ${least > 0 ? "positive" : "non-negative"} whole number${range}, got "${text}"`);
  }
  return value;
}

/** A duration option in seconds, as milliseconds; at most `mostSeconds` (by default what a timer takes). */
export function seconds(values: Values, name: NumberOption, fallback: number, mostSeconds = Math.floor(TIMER_MAX_MS / 1000)): number {
  const text = values[name];
  if (text === undefined) return fallback * 1000;
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0 || value > mostSeconds) {
    throw new CdpError("usage", `--${name} must be a positive number of seconds up to ${mostSeconds} (${inDays(mostSeconds)}), got "${text}"`);
  }
  return value * 1000;
}

const inDays = (secs: number) => (secs % 86_400 === 0 ? `${secs / 86_400} days` : `about ${(secs / 86_400).toFixed(1)} days`);

export function noPositionals(positionals: string[], most = 0): void {
  if (positionals.length > most) throw new CdpError("usage", `unexpected argument "${positionals[most]}"`);
}

/** The sidecar's settings, when --http is given (its other options without it are a mistake). */
export function httpOptions(values: Values): HttpOptions | undefined {
  if (values.http === undefined) {
    const stray = (["token-file", "http-max-body", "http-wait", "http-keepalive", "http-timeout"] as const).find((name) => values[name] !== undefined);
    if (stray) throw new CdpError("usage", `--${stray} needs --http`);
    return undefined;
  }
  return {
    listen: values.http,
    tokenFile: values["token-file"] === undefined ? undefined : resolve(values["token-file"]),
    maxBodyBytes: positiveInteger(values, "http-max-body", 1 << 20),
    waitMs: seconds(values, "http-wait", 10),
    keepAliveMs: seconds(values, "http-keepalive", 15),
    requestTimeoutMs: seconds(values, "http-timeout", 15),
  };
}

export async function clusterOptions(values: Values): Promise<ClusterOptions | undefined> {
  const names = [
    "cluster-prefix",
    "cluster-host",
    "cluster-user",
    "cluster-password-file",
    "cluster-ca",
    "cluster-cert",
    "cluster-key",
    "fleet-downgrade",
  ] as const;
  if (values.cluster === undefined) {
    const stray = names.find((name) => values[name] !== undefined);
    if (stray) throw new CdpError("usage", `--${stray} needs --cluster`);
    return undefined;
  }
  const match = /^(etcd|https?):\/\/(.+)$/.exec(values.cluster);
  const hosts = match ? match[2]!.split(",") : [];
  if (!match || hosts.some((host) => !/^[^\s/,]+:\d+$/.test(host))) {
    throw new CdpError("usage", `--cluster takes etcd://host:port[,host:port...], got "${values.cluster}"`);
  }
  const prefix = values["cluster-prefix"];
  if (!prefix?.startsWith("/")) throw new CdpError("usage", "--cluster needs --cluster-prefix /PATH, the same on every host of the fleet");
  const read = async (name: "cluster-password-file" | "cluster-ca" | "cluster-cert" | "cluster-key") => {
    const path = values[name];
    if (path === undefined) return undefined;
    return readFile(path).catch((error: Error) => {
      throw new CdpError("usage", `cannot read --${name} ${path}: ${error.message}`);
    });
  };
  const [password, ca, cert, key] = await Promise.all([read("cluster-password-file"), read("cluster-ca"), read("cluster-cert"), read("cluster-key")]);
  if ((values["cluster-user"] === undefined) !== (password === undefined))
    throw new CdpError("usage", "--cluster-user and --cluster-password-file go together");
  const tls = ca !== undefined || match[1] === "https";
  return {
    endpoints: hosts.map((host) => `${tls ? "https" : "http"}://${host}`),
    prefix,
    host: values["cluster-host"],
    auth: password === undefined ? undefined : { username: values["cluster-user"]!, password: password.toString("utf8").trim() },
    tls: ca === undefined ? undefined : { ca, cert, key },
    ...(values["fleet-downgrade"] ? { downgrade: true } : {}),
  };
}

export function createLogger(values: Values): Logger {
  const level = values["log-level"] ?? "info";
  if (!pino.levels.values[level]) throw new CdpError("usage", `--log-level must be one of trace, debug, info, warn, error, got "${level}"`);
  // pino-pretty is loaded only for a human's terminal: a service's log is JSON, and its memory is kept for it
  if (values.pretty || process.stdout.isTTY) {
    const pretty = createRequire(import.meta.url)("pino-pretty") as typeof import("pino-pretty");
    return pino({ level }, pretty({ colorize: process.stdout.isTTY, sync: true }));
  }
  return pino({ level }, pino.destination({ fd: 1, sync: true }));
}
