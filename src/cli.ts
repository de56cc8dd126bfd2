#!/usr/bin/env node
// The `cdp` command: a thin layer over the pipeline. `main` is callable from tests;
// only the last line of this file exits the process.
import { randomUUID } from "node:crypto";
import { realpathSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { userInfo } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { Logger } from "pino";
import { initDataDir, openDataDir } from "./datadir.js";
import { lockDataDir, lockHolder } from "./durable.js";
import { CdpError } from "./errors.js";
import { HELP, USAGE } from "./help.js";
import { formatHistory, historyJson, planRollback, selectHistory } from "./history.js";
import { INBOX_FILE } from "./inbox.js";
import { startCdp, type Cdp, type CdpOptions } from "./index.js";
import { compactJournal } from "./compactor.js";
import { JOURNAL_FILE, replayJournal } from "./journal.js";
import { clusterOptions, createLogger, didYouMean, httpOptions, noPositionals, parseCommand, positiveInteger, required, seconds, type Values } from "./options.js";
import { awaitReceipts, receiptMarks, type Receipt } from "./receipts.js";
import { loadSchemas, maskSecrets } from "./schemas.js";
import { readStatus } from "./status.js";
import { appendToInbox } from "./submit.js";
import { judgeInSequence } from "./validate.js";
import type { AppConfig } from "./values.js";
import { VERSION } from "./version.js";


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
  const landed = await appendToInbox(dir, text, options.wait !== false && watcher !== undefined);
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
