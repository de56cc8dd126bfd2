#!/usr/bin/env node
// The `cdp` command: a thin layer over the pipeline. `main` is callable from tests;
// only the last line of this file exits the process.
import { randomUUID } from "node:crypto";
import { realpathSync } from "node:fs";
import { userInfo } from "node:os";
import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { parseArgs, type ParseArgsConfig } from "node:util";
import { fileURLToPath } from "node:url";
import { pino, type Logger } from "pino";
import pretty from "pino-pretty";
import { CdpError } from "./errors.js";
import { startCdp, type Cdp, type CdpOptions, type ClusterOptions, type HttpOptions } from "./index.js";
import { INBOX_FILE } from "./inbox.js";
import { appendToInbox } from "./submit.js";
import { compactJournal, JOURNAL_FILE, replayJournal } from "./journal.js";
import { lockDataDir, lockHolder } from "./durable.js";
import { awaitReceipts, receiptMarks, type Receipt } from "./receipts.js";
import { initDataDir, openDataDir } from "./datadir.js";
import { judgeInSequence } from "./validate.js";
import { formatHistory, historyJson, planRollback, selectHistory } from "./history.js";
import { loadSchemas, maskSecrets } from "./schemas.js";
import { VERSION } from "./version.js";
import { readStatus } from "./status.js";
import type { AppConfig } from "./values.js";

const USAGE = `cdp: configuration delivery pipeline

Usage:
  cdp init   --dir D --schemas S     create and mark a data directory (once; idempotent)
  cdp watch  --dir D [--schemas S]   run the watcher in the foreground
  cdp push   --dir D LINE...         append change lines to D/${INBOX_FILE} (- reads them from stdin)
  cdp get    --dir D [app[.key]]     print the current config as JSON
  cdp status --dir D [--json]        the watcher, revision, lines waiting, last rejection
  cdp check  --schemas S [--dir D] [FILE|-]    say which lines would be rejected and why
  cdp history --dir D [app[.key]] [--limit N] [--json]   revisions, newest first
  cdp rollback --dir D (--to REV | --last) [--dry-run]   undo changes through the inbox
  cdp compact --dir D [--keep N]   rewrite the journal as its state plus recent history

Settings come from flags, then environment variables, then the data directory: every option
--NAME may be given as CDP_NAME (upper case, '-' as '_': CDP_DIR, CDP_SCHEMAS,
CDP_MAX_LINE_BYTES, CDP_HTTP …; for a switch, 1 or 0), and --schemas defaults to the schema
directory recorded by 'cdp init'. Flags win.
Run 'cdp COMMAND --help' for a command's options.
Exit codes: 0 done; 1 a check found rejections, a rollback was refused, or a fault stopped cdp;
2 bad usage or an invalid bootstrap (a schema or the journal); 3 the inbox stayed unavailable.`;

const HELP: Record<string, string> = {
  init: `Usage: cdp init --dir D --schemas S

Create the data directory D (mode 0700) and mark it as cdp's, recording the schema directory S
in D/cdp.conf. Every other command refuses a directory that is not initialised (exit 2), so
that a typo in --dir or an unmounted volume never looks like an empty configuration.
The schemas must load (at least one S/<app>.schema.json), and a journal already in D (from an
earlier cdp) must hold under them. Running it again with the same settings changes nothing
(exit 0).`,
  watch: `Usage: cdp watch --dir D --schemas S [options]

Follow D/${INBOX_FILE}: each new line is parsed, validated against S/<app>.schema.json and
either appended to the journal D/${JOURNAL_FILE} and applied, or written to D/cdp.rej with
the reason. Lines appended while cdp was stopped are processed at start.
Refuses to start (exit 2) when a schema or the journal is invalid.
SIGINT/SIGTERM finish and flush the batch in hand, then exit 0.

Options:
  --dir D                the data directory (made by 'cdp init')
  --schemas S            the directory of <app>.schema.json files (default: the one
                         recorded by 'cdp init')
  --max-line-bytes N     reject lines longer than N bytes (default 65536)
  --poll-interval MS     check the inbox every MS ms even without file events (default 1000)
  --poll-only            use the periodic check alone, no file-system events (network file systems)
  --max-outage SECONDS   exit 3 when the inbox stays unavailable longer than this (default 10)
  --max-outages N        exit 3 after more than N outages within the outage window (default 5)
  --outage-window SECONDS  the window for --max-outages (default 600)
  --compact-after N      compact the journal once it holds N changes (default 100000; 0: never)
  --keep-history N       changes kept as history when compacting (default 1000)
  --log-level LEVEL      trace, debug, info, warn, error (default info)
  --pretty               human-readable logs (the default on a terminal)

The sidecar (off unless --http is given):
  --http ADDRESS         serve the HTTP API, event stream, metrics and dashboard on
                         HOST:PORT (or PORT, on 127.0.0.1; 0 takes a free port)
  --token-file F         bearer tokens, one 'read TOKEN' or 'write TOKEN' per line; without
                         it only a loopback address is allowed and no token is asked for
  --http-max-body BYTES  refuse larger request bodies with 413 (default 1048576)
  --http-wait SECONDS    how long POST /v1/changes waits for outcomes before 202 (default 10)
  --http-keepalive SECONDS  keep-alive comment interval on idle event streams (default 15)
  --http-timeout SECONDS cut off a request not received within this time (default 15)

A fleet (off unless --cluster is given): one configuration for many hosts, ordered by etcd.
Each host keeps its own data directory; a line read here is committed to the fleet's log
only if the fleet is still at the state it was judged against, and every host applies the
log in the same order.
  --cluster URLS         etcd endpoints: etcd://host:port[,host:port...] (or http(s)://)
  --cluster-prefix P     the fleet's key prefix in etcd, the same on every host (e.g. /cdp/prod)
  --cluster-host NAME    this host's name in the fleet's records (default: hostname:dir)
  --cluster-user U       etcd user; the password is read from --cluster-password-file F
  --cluster-ca F         CA certificate (PEM) for TLS to etcd; --cluster-cert F and
                         --cluster-key F for a client certificate`,
  push: `Usage: cdp push --dir D [--reason TEXT] LINE... | cdp push --dir D -

Append change lines (app:key:value) to D/${INBOX_FILE}, all in one write, as 'echo LINE >>'
does, each after a '# by: USER' comment (the user behind sudo, where there is one) and, with
--reason, a '# reason: TEXT' comment: history, events and the dashboard show both. With -, the
lines are read from standard input.
When a watcher is running on D, cdp push waits for each line's outcome and prints it:
accepted at revision N, or rejected with the reason (exit 1 when any line is rejected).
Without one, it says the lines wait in the inbox.

Options:
  --reason TEXT          why: recorded with each change
  --wait                 wait for the outcomes (the default when a watcher is running)
  --no-wait              only queue the lines
  --wait-timeout SECONDS how long to wait for the outcomes (default 10)`,
  status: `Usage: cdp status --dir D [--json]

Say what state D is in: whether a watcher runs on it (its pid, since when, its sidecar's
address, its fleet), the revision, how many lines wait in D/${INBOX_FILE}, the last rejection,
and the schemas in force (their version and a digest of each file).

Options:
  --json                 the same as JSON, for scripts`,
  get: `Usage: cdp get --dir D [--schemas S] [app[.key.path]]

Print the configuration persisted in D/${JOURNAL_FILE} (with schema defaults) as JSON:
all apps, one app, or one key. Exits 2 on an invalid journal or an unknown app or key.
Secret (writeOnly) values are printed as "[secret]".

Options:
  --show-secrets         print secret values too`,
  check: `Usage: cdp check --schemas S [--dir D] [FILE|-]

Dry run: judge each line of FILE (or standard input) as the watcher would, one after the
other, and print every line that would be rejected, with the reason. With --dir, lines are
judged against the current configuration in D/${JOURNAL_FILE}, otherwise against the
schema defaults. Exit 0 when every line would be accepted, 1 when any would be rejected.

Options:
  --max-line-bytes N     the line length limit to apply (default 65536)`,
  history: `Usage: cdp history --dir D [--schemas S] [app[.key.path]] [--limit N] [--json]

Print the accepted changes recorded in D/${JOURNAL_FILE}, newest first: revision, time, source,
key, old and new value. Secret (writeOnly) values are shown as [secret].

Options:
  --limit N              at most N revisions
  --json                 a JSON array, for scripts`,
  compact: `Usage: cdp compact --dir D [--schemas S] [--keep N]

Rewrite the journal D/${JOURNAL_FILE} as the configuration before its last N changes plus those
changes (default 1000), so that it stops growing; replaying it gives the same configuration,
revision and inbox position. Crash-safe: a temporary file is written and fsync'd, then renamed
over the journal. A running watcher compacts by itself (--compact-after); stop it first to
compact by hand.

Options:
  --keep N               changes to keep as history (default 1000; 0 keeps none)`,
  rollback: `Usage: cdp rollback --dir D [--schemas S] (--to REV | --last) [--dry-run]

Bring the configuration back to its state at revision REV (--last: undo the latest change).
cdp computes the change lines that undo every later change (keys that did not exist at REV go
back to their schema default) and appends them to D/${INBOX_FILE}, so the watcher validates,
journals and announces them like any other change. A rollback that the current schemas would
refuse is refused (exit 1) before anything is written, with the reason.

Options:
  --dry-run              print the lines without appending them`,
};

const OPTIONS = {
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
} satisfies ParseArgsConfig["options"];

type Values = { [K in keyof typeof OPTIONS]?: (typeof OPTIONS)[K]["type"] extends "boolean" ? boolean : string };

export interface Io {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  stdin: () => Promise<Buffer>;
}

const processIo: Io = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
  stdin: async () => Buffer.concat(await process.stdin.toArray()),
};

/** Run the command line `argv` (without node and the script); resolves to the exit code. */
export async function main(argv: string[], io: Io = processIo): Promise<number> {
  try {
    const [command, ...rest] = argv;
    if (command === "help" && rest[0] !== undefined && rest[0] in HELP) {
      io.stdout(`${HELP[rest[0]]}\n`);
      return 0;
    }
    if (command === undefined || command === "help" || command === "--help" || command === "-h") {
      io.stdout(`${USAGE}\n`);
      return command === undefined ? 2 : 0;
    }
    if (command === "--version" || command === "-v" || command === "version") {
      io.stdout(`${VERSION}\n`);
      return 0;
    }
    if (!(command in HELP)) throw new CdpError("usage", `unknown command "${command}"${didYouMean(command, Object.keys(HELP))}`);
    const { values, positionals } = parseCommand(rest);
    if (values.help) {
      io.stdout(`${HELP[command]}\n`);
      return 0;
    }
    switch (command) {
      case "init":
        return await initCommand(values, positionals, io);
      case "watch":
        return await watchCommand(values, positionals);
      case "push":
        return await pushCommand(values, positionals, io);
      case "get":
        return await getCommand(values, positionals, io);
      case "status":
        return await statusCommand(values, positionals, io);
      case "history":
        return await historyCommand(values, positionals, io);
      case "rollback":
        return await rollbackCommand(values, positionals, io);
      case "compact":
        return await compactCommand(values, positionals, io);
      default:
        return await checkCommand(values, positionals, io);
    }
  } catch (error) {
    if (error instanceof CdpError) {
      io.stderr(`cdp: ${error.message}\n`);
      if (error.code === "usage") io.stderr(`Run 'cdp ${argv[0] && argv[0] in HELP ? `${argv[0]} ` : ""}--help' for usage.\n`);
      return error.code === "inbox" ? 3 : error.code === "refused" ? 1 : 2;
    }
    io.stderr(`cdp: ${(error as Error).message ?? String(error)}\n`);
    return 1;
  }
}

function parseCommand(args: string[]): { values: Values; positionals: string[] } {
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
function didYouMean(given: string, known: string[], prefix = ""): string {
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
  return `CDP_${option.toUpperCase().replace(/-/g, "_")}`;
}

function fromEnvironment(): Values {
  const values: Record<string, string | boolean> = {};
  for (const [name, option] of Object.entries(OPTIONS)) {
    if (name === "help" || name === "version") continue;
    const text = process.env[environmentName(name)];
    if (text === undefined || text === "") continue;
    if (option.type === "string") values[name] = text;
    else if (/^(1|true|yes|on)$/i.test(text)) values[name] = true;
    else if (!/^(0|false|no|off)$/i.test(text)) throw new CdpError("usage", `${environmentName(name)} is a switch: 1 or 0, got "${text}"`);
  }
  return values as Values;
}

function definedOnly(values: Values): Values {
  return Object.fromEntries(Object.entries(values).filter(([, value]) => value !== undefined)) as Values;
}

function required(values: Values, name: "dir" | "schemas"): string {
  const value = values[name];
  if (!value) throw new CdpError("usage", `--${name} is required (or ${environmentName(name)})`);
  return resolve(value);
}

// what a command other than watch says of the data directory: one line on stderr
const stderrLog = { info: (_fields: object, message: string) => void process.stderr.write(`cdp: ${message}\n`) } as Pick<Logger, "info">;

/** The data directory, which must be initialised, and the schema directory: given, else recorded by `cdp init`. */
async function dataDir(values: Values, log: Pick<Logger, "info"> = stderrLog): Promise<{ dir: string; schemas: string }> {
  const dir = required(values, "dir");
  const settings = await openDataDir(dir, log);
  const schemas = values.schemas ? resolve(values.schemas) : settings.schemas;
  if (!schemas) throw new CdpError("usage", `no schema directory: give --schemas (or CDP_SCHEMAS), or record one with 'cdp init --dir ${dir} --schemas DIR'`);
  return { dir, schemas };
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
  | "wait-timeout";

function positiveInteger(values: Values, name: NumberOption, fallback: number, least = 1): number {
  const text = values[name];
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < least) {
    throw new CdpError("usage", `--${name} must be a ${least > 0 ? "positive" : "non-negative"} whole number, got "${text}"`);
  }
  return value;
}

function seconds(values: Values, name: NumberOption, fallback: number): number {
  const text = values[name];
  if (text === undefined) return fallback * 1000;
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0) throw new CdpError("usage", `--${name} must be a positive number of seconds, got "${text}"`);
  return value * 1000;
}

function noPositionals(positionals: string[], most = 0): void {
  if (positionals.length > most) throw new CdpError("usage", `unexpected argument "${positionals[most]}"`);
}

async function initCommand(values: Values, positionals: string[], io: Io): Promise<number> {
  noPositionals(positionals);
  const dir = required(values, "dir");
  const schemaDir = required(values, "schemas");
  const schemas = await loadSchemas(schemaDir);
  await replayJournal(join(dir, JOURNAL_FILE), schemas); // an earlier cdp's journal must hold under them
  const outcome = await initDataDir(dir, schemaDir);
  const said = { created: `initialised the data directory ${dir}`, adopted: `adopted ${dir}, written by an earlier cdp`, unchanged: `${dir} is already initialised: nothing changed` };
  io.stderr(`${said[outcome]} (schemas: ${schemaDir}, apps: ${[...schemas.keys()].join(", ")})\n`);
  if (outcome !== "unchanged") io.stderr(`start the watcher with: cdp watch --dir ${dir}\n`);
  return 0;
}

async function watchCommand(values: Values, positionals: string[]): Promise<number> {
  noPositionals(positionals);
  const logger = createLogger(values);
  const settings = {
    maxLineBytes: positiveInteger(values, "max-line-bytes", 65536),
    pollIntervalMs: positiveInteger(values, "poll-interval", 1000),
    watchEvents: !values["poll-only"],
    maxOutageMs: seconds(values, "max-outage", 10),
    maxOutages: positiveInteger(values, "max-outages", 5),
    outageWindowMs: seconds(values, "outage-window", 600),
    compactAfter: positiveInteger(values, "compact-after", 100_000, 0),
    keepHistory: positiveInteger(values, "keep-history", 1000, 0),
    http: httpOptions(values),
    cluster: await clusterOptions(values),
  };
  const options: CdpOptions = { ...(await dataDir(values, logger)), logger, ...settings };
  // listening from the start: a signal that arrives while cdp starts stops it once it has started
  let cdp: Cdp | undefined;
  let stopping = false;
  const stop = (signal: string) => {
    logger.info({ signal }, "stopping: finishing the batch in hand");
    stopping = true;
    void cdp?.stop();
  };
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  cdp = await startCdp(options);
  if (stopping) void cdp.stop();
  try {
    await cdp.stopped;
  } catch (error) {
    if (error instanceof CdpError) throw error; // the inbox stayed unavailable: exit 3
    return 1; // a fault of the machine, logged by the pipeline
  }
  logger.info("stopped");
  return 0;
}

function httpOptions(values: Values): HttpOptions | undefined {
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

async function clusterOptions(values: Values): Promise<ClusterOptions | undefined> {
  const names = ["cluster-prefix", "cluster-host", "cluster-user", "cluster-password-file", "cluster-ca", "cluster-cert", "cluster-key"] as const;
  if (values.cluster === undefined) {
    const stray = names.find((name) => values[name] !== undefined);
    if (stray) throw new CdpError("usage", `--${stray} needs --cluster`);
    return undefined;
  }
  const match = /^(etcd|https?):\/\/(.+)$/.exec(values.cluster);
  const hosts = match?.[2]!.split(",") ?? [];
  if (!match || hosts.some((host) => !/^[^\s/,]+:\d+$/.test(host))) {
    throw new CdpError("usage", `--cluster takes etcd://host:port[,host:port...], got "${values.cluster}"`);
  }
  const prefix = values["cluster-prefix"];
  if (!prefix || !prefix.startsWith("/")) throw new CdpError("usage", "--cluster needs --cluster-prefix /PATH, the same on every host of the fleet");
  const read = async (name: "cluster-password-file" | "cluster-ca" | "cluster-cert" | "cluster-key") => {
    const path = values[name];
    if (path === undefined) return undefined;
    return readFile(path).catch((error: Error) => {
      throw new CdpError("usage", `cannot read --${name} ${path}: ${error.message}`);
    });
  };
  const [password, ca, cert, key] = await Promise.all([read("cluster-password-file"), read("cluster-ca"), read("cluster-cert"), read("cluster-key")]);
  if ((values["cluster-user"] === undefined) !== (password === undefined)) throw new CdpError("usage", "--cluster-user and --cluster-password-file go together");
  const tls = ca !== undefined || match[1] === "https";
  return {
    endpoints: hosts.map((host) => `${tls ? "https" : "http"}://${host}`),
    prefix,
    host: values["cluster-host"],
    auth: password === undefined ? undefined : { username: values["cluster-user"]!, password: password.toString("utf8").trim() },
    tls: ca === undefined ? undefined : { ca, cert, key },
  };
}

function createLogger(values: Values): Logger {
  const level = values["log-level"] ?? "info";
  if (!pino.levels.values[level]) throw new CdpError("usage", `--log-level must be one of trace, debug, info, warn, error, got "${level}"`);
  if (values.pretty || process.stdout.isTTY) return pino({ level }, pretty({ colorize: process.stdout.isTTY, sync: true }));
  return pino({ level }, pino.destination({ fd: 1, sync: true }));
}

async function pushCommand(values: Values, positionals: string[], io: Io): Promise<number> {
  const dir = required(values, "dir");
  let lines = positionals;
  if (lines.length === 1 && lines[0] === "-") lines = (await io.stdin()).toString("utf8").split("\n").map((line) => line.replace(/\r$/, "")).filter((line) => line !== "");
  else if (lines.length === 0) throw new CdpError("usage", "give at least one LINE to push (or - to read them from stdin)");
  else if (lines.some((line) => /[\r\n]/.test(line))) throw new CdpError("usage", "a LINE may not contain a newline: give each line as its own argument");
  if (values.wait && values["no-wait"]) throw new CdpError("usage", "give --wait or --no-wait, not both");
  const timeoutMs = seconds(values, "wait-timeout", 10);
  const receipts = await queueLines(dir, lines, io, { reason: values.reason, wait: values["no-wait"] ? false : values.wait ? true : "if-watching", timeoutMs });
  for (const receipt of receipts ?? []) {
    const outcome = receipt.outcome === "accepted" ? `accepted at revision ${receipt.revision}` : receipt.outcome === "rejected" ? `rejected: ${receipt.reason}` : receipt.outcome === "ignored" ? "ignored (a comment)" : "still waiting in the inbox";
    io.stdout(`${receipt.text}  ${outcome}\n`);
  }
  const waiting = receipts?.filter((receipt) => receipt.outcome === "waiting").length ?? 0;
  if (waiting > 0) io.stderr(`cdp: ${waiting} line${waiting === 1 ? " was" : "s were"} not processed within ${timeoutMs / 1000} s: they wait in the inbox (is the watcher busy or stopped?)\n`);
  return receipts?.some((receipt) => receipt.outcome === "rejected") ? 1 : 0;
}

/** Who runs this command, for `# by:` (the user behind sudo, where there is one). */
function invokingUser(): string {
  return process.env.SUDO_USER || userInfo().username;
}

/**
 * Append lines to the inbox with one write in append mode (concurrent writers never interleave
 * within it), each after a `# by:` (and `# reason:`) comment; then, when asked, wait for their
 * outcomes from the running watcher.
 */
async function queueLines(dir: string, lines: string[], io: Io, options: { reason?: string; wait: boolean | "if-watching"; timeoutMs: number }): Promise<Receipt[] | undefined> {
  await openDataDir(dir, stderrLog);
  const watcher = await lockHolder(dir);
  const marks = await receiptMarks(dir);
  const said = `# by: ${invokingUser()}\n${options.reason ? `# reason: ${options.reason.replace(/[\r\n]+/g, " ")}\n` : ""}`;
  let text = `# cdp push id=${randomUUID()}\n`;
  const ends: number[] = [];
  for (const line of lines) {
    text += `${said}${line}\n`;
    ends.push(Buffer.byteLength(text));
  }
  const landed = await appendToInbox(dir, text);
  io.stderr(`queued ${lines.length} line${lines.length === 1 ? "" : "s"} in ${join(dir, INBOX_FILE)}\n`);
  if (options.wait === false) return undefined;
  if (watcher === undefined) {
    io.stderr(`cdp: no watcher is running on ${dir}: the lines wait in the inbox until 'cdp watch --dir ${dir}' starts\n`);
    return undefined;
  }
  if (!landed) return undefined; // the inbox was replaced at once: their outcomes cannot be told apart
  const start = landed.end - Buffer.byteLength(text);
  const numberOf = (i: number) => landed.linesBefore + (text.slice(0, ends[i]).match(/\n/g)?.length ?? 0);
  return awaitReceipts(dir, landed.file, lines.map((line, i) => ({ text: line, end: start + ends[i]!, number: numberOf(i) })), marks, options.timeoutMs);
}

async function statusCommand(values: Values, positionals: string[], io: Io): Promise<number> {
  noPositionals(positionals);
  const { dir, schemas } = await dataDir(values);
  const status = await readStatus(dir, schemas);
  if (values.json) {
    io.stdout(`${JSON.stringify(status, null, 2)}\n`);
    return 0;
  }
  const { watcher } = status;
  const running = watcher.running ? `running, pid ${watcher.pid}${watcher.started ? ` since ${watcher.started}` : ""}${watcher.url ? `, sidecar ${watcher.url}` : ""}` : "not running";
  const rows = [
    ["data directory", dir],
    ["watcher", running],
    ["fleet", watcher.running && watcher.fleet ? `${watcher.fleet.prefix} as ${watcher.fleet.host}` : "none"],
    ["revision", String(status.revision)],
    ["inbox", `${status.waiting} line${status.waiting === 1 ? "" : "s"} waiting in ${join(dir, INBOX_FILE)}`],
    ["last rejection", status.lastRejection ? `${status.lastRejection.time} ${status.lastRejection.source}: ${status.lastRejection.reason}` : "none"],
    ["schemas", `${schemas}: ${status.apps.map(({ app, version, sha256 }) => `${app} (${version === null ? "unversioned" : `version ${version}`}, ${sha256})`).join(", ")}`],
  ];
  for (const [name, value] of rows) io.stdout(`${name!.padEnd(15)} ${value}\n`);
  return 0;
}

async function getCommand(values: Values, positionals: string[], io: Io): Promise<number> {
  noPositionals(positionals, 1);
  const { dir, schemas: schemaDir } = await dataDir(values);
  const schemas = await loadSchemas(schemaDir);
  const { apps } = await replayJournal(join(dir, JOURNAL_FILE), schemas);
  const selector = positionals[0];
  let result: unknown = Object.fromEntries(apps);
  if (selector !== undefined) {
    const [app = "", ...path] = selector.split(".");
    const schema = schemas.get(app);
    if (!schema) throw new CdpError("usage", `unknown app "${app}"`);
    const info = path.length > 0 ? schema.key(path) : null;
    if (typeof info === "string") throw new CdpError("usage", `${app}${info}`);
    result = path.reduce<unknown>((node, key) => (node as AppConfig | undefined)?.[key], apps.get(app));
    if (result === undefined) {
      io.stderr(`cdp: ${selector} has no value\n`);
      return 1;
    }
    if (!values["show-secrets"]) result = typeof info === "object" && info?.writeOnly ? "[secret]" : maskSecrets(schema, path, result);
  } else if (!values["show-secrets"]) {
    result = Object.fromEntries([...apps].map(([app, config]) => [app, maskSecrets(schemas.get(app)!, [], config)]));
  }
  const text = JSON.stringify(result, null, 2);
  if (text.includes('"[secret]"') && !values["show-secrets"]) io.stderr("cdp: secret (writeOnly) values are shown as [secret]; --show-secrets shows them\n");
  io.stdout(`${text}\n`);
  return 0;
}

async function checkCommand(values: Values, positionals: string[], io: Io): Promise<number> {
  noPositionals(positionals, 1);
  const target = values.dir === undefined ? undefined : await dataDir(values);
  const schemas = await loadSchemas(target?.schemas ?? required(values, "schemas"));
  const maxLineBytes = positiveInteger(values, "max-line-bytes", 65536);
  const input = positionals[0] ?? "-";
  const name = input === "-" ? "stdin" : input;
  let text: Buffer;
  try {
    text = input === "-" ? await io.stdin() : await readFile(input);
  } catch (error) {
    throw new CdpError("usage", `cannot read ${input}: ${(error as Error).message}`);
  }
  const apps = target ? (await replayJournal(join(target.dir, JOURNAL_FILE), schemas)).apps : new Map([...schemas].map(([app, s]) => [app, s.defaults]));
  let accepted = 0;
  let rejected = 0;
  for (const { line, outcome } of judgeInSequence(text, schemas, apps, maxLineBytes)) {
    if (outcome.kind === "accept") accepted++;
    if (outcome.kind !== "reject") continue;
    rejected++;
    io.stdout(`${name}:${line.number}: ${outcome.reason}\n`);
  }
  io.stderr(`${accepted + rejected} change line${accepted + rejected === 1 ? "" : "s"}: ${accepted} would be accepted, ${rejected} rejected\n`);
  return rejected > 0 ? 1 : 0;
}

async function historyCommand(values: Values, positionals: string[], io: Io): Promise<number> {
  noPositionals(positionals, 1);
  const { dir, schemas: schemaDir } = await dataDir(values);
  const schemas = await loadSchemas(schemaDir);
  const state = await replayJournal(join(dir, JOURNAL_FILE), schemas, { history: true });
  const entries = selectHistory(state.history, positionals[0], positiveInteger(values, "limit", Number.MAX_SAFE_INTEGER));
  if (values.json) io.stdout(`${JSON.stringify(historyJson(entries), null, 2)}\n`);
  else io.stdout(entries.length > 0 ? `${formatHistory(entries)}\n` : "no changes recorded\n");
  return 0;
}

async function rollbackCommand(values: Values, positionals: string[], io: Io): Promise<number> {
  noPositionals(positionals);
  const { dir, schemas: schemaDir } = await dataDir(values);
  const schemas = await loadSchemas(schemaDir);
  const state = await replayJournal(join(dir, JOURNAL_FILE), schemas, { history: true });
  if ((values.to === undefined) === !values.last) throw new CdpError("usage", "give either --to REV or --last");
  const revision = values.last ? state.revision - 1 : Number(values.to);
  if (!Number.isInteger(revision)) throw new CdpError("usage", `--to must be a revision number, got "${values.to}"`);
  const lines = planRollback(state, schemas, revision);
  if (lines.length === 0) {
    io.stderr(`the configuration is already as it was at revision ${revision}\n`);
    return 0;
  }
  if (values["dry-run"]) {
    io.stdout(`${lines.join("\n")}\n`);
    return 0;
  }
  // like cdp push: with a watcher running, done once the lines are applied (or refused)
  const receipts = await queueLines(dir, lines, io, { reason: `rollback to revision ${revision}`, wait: "if-watching", timeoutMs: seconds(values, "wait-timeout", 10) });
  io.stdout(`${lines.join("\n")}\n`);
  const refused = receipts?.filter((receipt) => receipt.outcome === "rejected") ?? [];
  for (const receipt of refused) io.stderr(`cdp: ${receipt.text} was rejected: ${receipt.reason}\n`);
  return refused.length > 0 ? 1 : 0;
}

async function compactCommand(values: Values, positionals: string[], io: Io): Promise<number> {
  noPositionals(positionals);
  const { dir, schemas: schemaDir } = await dataDir(values);
  const schemas = await loadSchemas(schemaDir);
  const keep = positiveInteger(values, "keep", 1000, 0);
  const unlock = await lockDataDir(dir, "compact by hand (a running watcher compacts by itself)");
  try {
    const state = await replayJournal(join(dir, JOURNAL_FILE), schemas, { history: true });
    if (state.torn !== undefined) throw new CdpError("usage", `${join(dir, JOURNAL_FILE)} ends with a torn record: start cdp watch once to repair it`);
    const { before, after } = await compactJournal(join(dir, JOURNAL_FILE), state, schemas, keep);
    io.stderr(`compacted ${join(dir, JOURNAL_FILE)}: ${before} → ${after} bytes, revision ${state.revision}\n`);
    return 0;
  } finally {
    await unlock();
  }
}


/** Wait until what was written to a stream has left the process (a pipe takes 64 KiB at a time). */
async function flushed(stream: NodeJS.WriteStream): Promise<void> {
  if (stream.writableLength > 0) await new Promise((resolve) => stream.once("drain", resolve));
}

if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const code = await main(process.argv.slice(2));
  await Promise.all([flushed(process.stdout), flushed(process.stderr)]);
  process.exit(code);
}
