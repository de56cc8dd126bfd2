// The `cdp` command: a thin layer over the pipeline. `main` is callable from tests (src/cli.ts
// runs it and exits the process). The commands that start or feed the watcher
// are here; those that read the data directory's files are in commands.ts.
import { join, resolve } from "node:path";
import { initDataDir } from "../store/datadir.js";
import { queueLines } from "./queue.js";
import { pushInTime, scheduleCommand } from "./schedule-commands.js";
import { createSecretsKey, readSecretsKey } from "../store/secrets-key.js";
import { maskLine, sealLines } from "../schemas/sealing.js";
import { stat } from "node:fs/promises";
import {
  checkCommand,
  compactCommand,
  dataDir,
  getCommand,
  historyCommand,
  planCommand,
  rekeyCommand,
  sealForInbox,
  statusCommand,
  type Io,
} from "./commands.js";
import { CdpError } from "../errors.js";
import { HELP, USAGE } from "./help.js";
import { planRollback } from "../store/history.js";
import { startCdp, type Cdp, type CdpOptions } from "../index.js";
import { JOURNAL_FILE, replayJournal } from "../store/journal.js";
import {
  clusterOptions,
  createLogger,
  didYouMean,
  httpOptions,
  noPositionals,
  parseCommand,
  positiveInteger,
  required,
  seconds,
  TIMER_MAX_MS,
  type Values,
} from "./options.js";
import { loadSchemas } from "../schemas/schemas.js";
import { judgeInSequence } from "../schemas/validate.js";
import { rolloutCommand } from "./rollout-commands.js";
import { VERSION } from "../version.js";

export type { Io } from "./commands.js";

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
      case "rekey":
        return await rekeyCommand(values, positionals, io);
      case "schedule":
        return await scheduleCommand(values, positionals, io);
      case "plan":
        return await planCommand(values, positionals, io);
      case "rollout":
        return await rolloutCommand(values, positionals, io);
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

async function initCommand(values: Values, positionals: string[], io: Io): Promise<number> {
  noPositionals(positionals);
  const dir = required(values, "dir");
  const schemaDir = required(values, "schemas");
  const schemas = await loadSchemas(schemaDir);
  const keyFile = values["secrets-key"] === undefined ? undefined : resolve(values["secrets-key"]);
  const created = keyFile !== undefined && !(await stat(keyFile).catch(() => undefined));
  const sealing = keyFile === undefined ? undefined : created ? await createSecretsKey(keyFile) : await readSecretsKey(keyFile);
  await replayJournal(join(dir, JOURNAL_FILE), schemas); // an earlier cdp's journal must hold under them
  const outcome = await initDataDir(dir, schemaDir, sealing);
  if (sealing)
    io.stderr(
      `${created ? "wrote a new secrets key to" : "secret values are sealed with the key in"} ${keyFile} (key ${sealing.id}): every command on ${dir} needs it (--secrets-key)\n`,
    );
  const said = {
    created: `initialised the data directory ${dir}`,
    adopted: `adopted ${dir}, written by an earlier cdp`,
    unchanged: `${dir} is already initialised: nothing changed`,
  };
  io.stderr(`${said[outcome]} (schemas: ${schemaDir}, apps: ${[...schemas.keys()].join(", ")})\n`);
  if (outcome !== "unchanged") io.stderr(`start the watcher with: cdp watch --dir ${dir}\n`);
  return 0;
}

async function watchCommand(values: Values, positionals: string[]): Promise<number> {
  noPositionals(positionals);
  const logger = createLogger(values);
  const settings = {
    maxLineBytes: positiveInteger(values, "max-line-bytes", 65536),
    pollIntervalMs: positiveInteger(values, "poll-interval", 1000, 1, TIMER_MAX_MS),
    watchEvents: !values["poll-only"],
    maxOutageMs: seconds(values, "max-outage", 10),
    maxOutages: positiveInteger(values, "max-outages", 5),
    outageWindowMs: seconds(values, "outage-window", 600),
    compactAfter: positiveInteger(values, "compact-after", 100_000, 0),
    keepHistory: positiveInteger(values, "keep-history", 1000, 0),
    http: httpOptions(values),
    cluster: await clusterOptions(values),
    ...(values.render ? { render: values.render.map((path) => resolve(path)) } : {}),
  };
  const { dir, schemas } = await dataDir(values, logger);
  const secretsKey = values["secrets-key"];
  const options: CdpOptions = { dir, schemas, logger, ...settings, ...(secretsKey === undefined ? {} : { secretsKeyFile: resolve(secretsKey) }) };
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
  if (lines.length === 1 && lines[0] === "-")
    lines = (await io.stdin())
      .toString("utf8")
      .split("\n")
      .map((line) => line.replace(/\r$/, ""))
      .filter((line) => line !== "");
  else if (lines.length === 0) throw new CdpError("usage", "give at least one LINE to push (or - to read them from stdin)");
  else if (lines.some((line) => /[\r\n]/.test(line))) throw new CdpError("usage", "a LINE may not contain a newline: give each line as its own argument");
  if (values.wait && values["no-wait"]) throw new CdpError("usage", "give --wait or --no-wait, not both");
  if (values.at !== undefined || values.for !== undefined) return pushInTime(values, lines, io);
  const timeoutMs = seconds(values, "wait-timeout", 10);
  const wait = values["no-wait"] ? false : values.wait ? true : "if-watching";
  const { queued, shown } = await sealForInbox(dir, values, lines);
  const { receipts, watching } = await queueLines(dir, queued, io, { reason: values.reason, wait, timeoutMs });
  if (!watching && wait !== false) return judgeQueued(values, queued, shown, io);
  for (const [i, receipt] of (receipts ?? []).entries()) {
    const outcome =
      receipt.outcome === "accepted"
        ? `accepted at revision ${receipt.revision}`
        : receipt.outcome === "taken back"
          ? `taken back at revision ${receipt.takenBackAt}: ${receipt.reason}`
          : receipt.outcome === "rejected"
            ? `rejected: ${receipt.reason}`
            : receipt.outcome === "ignored"
              ? "ignored (a comment)"
              : "still waiting in the inbox";
    io.stdout(`${shown[i]}  ${outcome}\n`);
  }
  const waiting = receipts?.filter((receipt) => receipt.outcome === "waiting").length ?? 0;
  if (waiting > 0)
    io.stderr(
      `cdp: ${waiting} line${waiting === 1 ? " was" : "s were"} not processed within ${timeoutMs / 1000} s: they wait in the inbox (is the watcher busy or stopped?)\n`,
    );
  return receipts?.some((receipt) => receipt.outcome === "rejected" || receipt.outcome === "taken back") ? 1 : 0;
}

/**
 * Lines queued while no watcher runs: judged now against the schemas and the configuration in
 * force, as the watcher will judge them (unless either changes first); exit 1 if any would be rejected.
 */
async function judgeQueued(values: Values, lines: string[], shown: string[], io: Io): Promise<number> {
  const { dir, schemas: schemaDir } = await dataDir(values, { info: () => undefined });
  const schemas = await loadSchemas(schemaDir);
  const { apps } = await replayJournal(join(dir, JOURNAL_FILE), schemas);
  const maxLineBytes = positiveInteger(values, "max-line-bytes", 65536);
  let rejected = 0;
  for (const { line, outcome } of judgeInSequence(Buffer.from(`${lines.join("\n")}\n`), schemas, apps, maxLineBytes)) {
    const text = shown[line.number - 1] ?? line.text;
    if (outcome.kind === "reject") rejected++;
    io.stdout(
      `${text}  queued; ${outcome.kind === "reject" ? `would be rejected now: ${outcome.reason}` : outcome.kind === "accept" ? "would be accepted now" : "ignored (a comment)"}\n`,
    );
  }
  if (rejected > 0)
    io.stderr(
      `cdp: ${rejected} line${rejected === 1 ? "" : "s"} would be rejected by the schemas in force (${schemaDir}): they will land in cdp.rej when the watcher reads them\n`,
    );
  return rejected > 0 ? 1 : 0;
}

async function rollbackCommand(values: Values, positionals: string[], io: Io): Promise<number> {
  noPositionals(positionals);
  const { dir, schemas: schemaDir, sealing } = await dataDir(values);
  const schemas = await loadSchemas(schemaDir);
  const state = await replayJournal(join(dir, JOURNAL_FILE), schemas, { history: true });
  if ((values.to === undefined) === !values.last) throw new CdpError("usage", "give either --to REV or --last");
  const revision = values.last ? state.revision - 1 : /^\d{1,15}$/.test(values.to ?? "") ? Number(values.to) : NaN;
  if (!Number.isInteger(revision)) throw new CdpError("usage", `--to must be a revision number, got "${values.to}"`);
  const lines = planRollback(state, schemas, revision);
  if (lines.length === 0) {
    io.stderr(`the configuration is already as it was at revision ${revision}\n`);
    return 0;
  }
  const shown = lines.map((line) => maskLine(line, schemas));
  if (values["dry-run"]) {
    io.stdout(`${shown.join("\n")}\n`);
    return 0;
  }
  // like cdp push: with a watcher running, done once the lines are applied (or refused)
  const { receipts } = await queueLines(dir, sealLines(lines, schemas, sealing), io, {
    reason: `rollback to revision ${revision}`,
    wait: "if-watching",
    timeoutMs: seconds(values, "wait-timeout", 10),
  });
  io.stdout(`${shown.join("\n")}\n`);
  for (const [i, receipt] of (receipts ?? []).entries()) if (receipt.outcome === "rejected") io.stderr(`cdp: ${shown[i]} was rejected: ${receipt.reason}\n`);
  const refused = receipts?.filter((receipt) => receipt.outcome === "rejected") ?? [];
  return refused.length > 0 ? 1 : 0;
}

/**
 * Wait until what was written to a stream has left the process (a pipe takes 64 KiB at a time).
 * An empty write's callback comes once every write before it is out: "drain" comes only after a
 * write that filled the buffer, and waiting for it with less in the buffer left the process with
 * nothing to do, which Node ends with exit code 13 (cdp push of 300 lines, one run in five).
 */
export async function flushed(stream: NodeJS.WritableStream & { writableLength: number }): Promise<void> {
  if (stream.writableLength > 0) await new Promise<void>((resolve) => stream.write("", () => resolve()));
}
