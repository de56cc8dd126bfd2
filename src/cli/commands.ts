// The commands that work on the data directory's files, without the watcher: status, get,
// check, history, plan and compact.
import { readFile, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { Logger } from "pino";
import { compactJournal, swapIn } from "../store/compactor.js";
import { checkSecretsKey, openDataDir, recordSecretsKey } from "../store/datadir.js";
import { createSecretsKey, readSecretsKey } from "../store/secrets-key.js";
import { checkResealed, resealFile, swapResealed } from "../store/rekey.js";
import { REJECTS_FILE } from "../store/rejects.js";
import { maskLine, sealLines } from "../schemas/sealing.js";
import type { SecretsKey } from "../lines/sealed.js";
import { lockDataDir } from "../store/durable.js";
import { CdpError } from "../errors.js";
import { formatHistory, historyJson, selectHistory } from "../store/history.js";
import { INBOX_FILE } from "../inbox/inbox.js";
import { JOURNAL_FILE, replayJournal } from "../store/journal.js";
import { noPositionals, positiveInteger, required, type Values } from "./options.js";
import { describePlan, formatPlan } from "../pipeline/plan.js";
import { loadSchemas, maskSecrets, readSchemaTexts } from "../schemas/schemas.js";
import { readStatus } from "./status.js";
import { keysOf, readRolloutsView, ROLLOUTS_FILE } from "../fleet/rollouts.js";
import { planUpgrade } from "../pipeline/upgrade.js";
import { judgeInSequence } from "../schemas/validate.js";
import type { AppConfig } from "../lines/values.js";

/** Where a command's output goes (the process's, or a test's). */
export interface Io {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  stdin: () => Promise<Buffer>;
}

// what a command other than watch says of the data directory: one line on stderr
export const stderrLog = { info: (_fields: object, message: string) => void process.stderr.write(`cdp: ${message}\n`) } as Pick<Logger, "info">;

/** The data directory, which must be initialised, and the schema directory: given, else recorded by `cdp init`. */
/**
 * The data directory and its schemas; with --secrets-key, the key (sealed values then open). A
 * directory whose secrets are sealed is refused without its key (exit 2).
 */
export async function dataDir(values: Values, log: Pick<Logger, "info"> = stderrLog): Promise<{ dir: string; schemas: string; sealing?: SecretsKey }> {
  const dir = required(values, "dir");
  const settings = await openDataDir(dir, log);
  const schemas = values.schemas ? resolve(values.schemas) : settings.schemas;
  if (!schemas) throw new CdpError("usage", `no schema directory: give --schemas (or CDP_SCHEMAS), or record one with 'cdp init --dir ${dir} --schemas DIR'`);
  const sealing = await secretsKeyOption(values);
  checkSecretsKey(dir, settings, sealing);
  return sealing ? { dir, schemas, sealing } : { dir, schemas };
}

/**
 * Lines as they go to the inbox, and as they are shown: with a key (or in a directory whose secrets
 * are sealed, where a secret line needs its key) each secret value sealed, and shown as [secret].
 */
export async function sealForInbox(dir: string, values: Values, lines: string[]): Promise<{ queued: string[]; shown: string[] }> {
  const settings = await openDataDir(dir, stderrLog);
  const sealing = await secretsKeyOption(values);
  if (!sealing && settings.secretsKey === undefined) return { queued: lines, shown: lines };
  const schemaDir = values.schemas ? resolve(values.schemas) : settings.schemas;
  if (!schemaDir) throw new CdpError("usage", `to seal secret values cdp needs the schemas: give --schemas (or CDP_SCHEMAS)`);
  const schemas = await loadSchemas(schemaDir);
  const shown = lines.map((line) => maskLine(line, schemas));
  if (sealing || shown.some((line, i) => line !== lines[i])) checkSecretsKey(dir, settings, sealing);
  return { queued: sealLines(lines, schemas, sealing), shown };
}

/** The key --secrets-key (CDP_SECRETS_KEY_FILE) names, if given. */
export async function secretsKeyOption(values: Values): Promise<SecretsKey | undefined> {
  const file = values["secrets-key"];
  return file === undefined ? undefined : readSecretsKey(resolve(file));
}

export async function statusCommand(values: Values, positionals: string[], io: Io): Promise<number> {
  noPositionals(positionals);
  const { dir, schemas } = await dataDir(values);
  const status = await readStatus(dir, schemas);
  if (values.json) {
    io.stdout(`${JSON.stringify(status, null, 2)}\n`);
    return 0;
  }
  const { watcher } = status;
  const running = watcher.running
    ? `running, pid ${watcher.pid}${watcher.started ? ` since ${watcher.started}` : ""}${watcher.url ? `, sidecar ${watcher.url}` : ""}`
    : "not running";
  const rows = [
    ["data directory", dir],
    ["watcher", running],
    ["fleet", watcher.running && watcher.fleet ? `${watcher.fleet.prefix} as ${watcher.fleet.host}` : "none"],
    ...(watcher.running && watcher.fleet ? [["rollouts", await rolloutsInProgress(dir)]] : []),
    ["revision", String(status.revision)],
    ["inbox", `${status.waiting} line${status.waiting === 1 ? "" : "s"} waiting in ${join(dir, INBOX_FILE)}`],
    ["last rejection", status.lastRejection ? `${status.lastRejection.time} ${status.lastRejection.source}: ${status.lastRejection.reason}` : "none"],
    ["schemas", `${schemas}: ${status.apps.map(({ app, version, inForce, sha256 }) => `${app} (${schemaVersion(version, inForce)}, ${sha256})`).join(", ")}`],
  ];
  for (const [name, value] of rows) io.stdout(`${name!.padEnd(15)} ${value}\n`);
  return 0;
}

/** The rollouts baking, as the watcher last wrote them, in words. */
async function rolloutsInProgress(dir: string): Promise<string> {
  const baking = (await readRolloutsView(dir))?.rollouts.filter((rollout) => rollout.state === "baking") ?? [];
  if (baking.length === 0) return "none in progress";
  return `${baking.map((rollout) => `${rollout.id} of ${rollout.app} baking on ${rollout.hosts.join(",")} until ${rollout.bakeUntil}`).join("; ")} (cdp rollout status)`;
}

/** "version 2", or what is in force when the file declares another (taken at the watcher's next look, or vetoed). */
function schemaVersion(file: number | null, inForce: number | undefined): string {
  if (inForce === undefined || inForce === (file ?? 1)) return file === null && inForce === undefined ? "unversioned" : `version ${file ?? 1}`;
  return `version ${inForce} in force, the file is version ${file ?? 1}`;
}

export async function getCommand(values: Values, positionals: string[], io: Io): Promise<number> {
  noPositionals(positionals, 1);
  const { dir, schemas: schemaDir } = await dataDir(values);
  const schemas = await loadSchemas(schemaDir);
  const { apps, versions } = await replayJournal(join(dir, JOURNAL_FILE), schemas);
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
  // a canary's values of a rollout that bakes are not yet the fleet's: say so (stdout stays the config)
  const view = await readRolloutsView(dir);
  for (const rollout of view?.rollouts ?? []) {
    const shown = selector === undefined || selector.split(".")[0] === rollout.app;
    if (shown && rollout.state === "baking" && rollout.hosts.includes(view!.host))
      io.stderr(
        `cdp: staged here by rollout ${rollout.id} (baking until ${rollout.bakeUntil}; the other hosts do not have it yet): ${keysOf(rollout).join(", ")}\n`,
      );
  }
  // the shape an app's config has: the schema version in force, for apps that use versions
  for (const [app, { version }] of versions) {
    if (selector !== undefined && selector.split(".")[0] !== app) continue;
    const file = schemas.get(app)?.version;
    io.stderr(`cdp: ${app} is at schema version ${version}${file !== undefined && file !== version ? ` (its file is version ${file})` : ""}\n`);
  }
  io.stdout(`${text}\n`);
  return 0;
}

export async function checkCommand(values: Values, positionals: string[], io: Io): Promise<number> {
  noPositionals(positionals, 1);
  const target = values.dir === undefined ? undefined : await dataDir(values);
  if (!target) await secretsKeyOption(values); // sealed values in the lines open with it
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

export async function historyCommand(values: Values, positionals: string[], io: Io): Promise<number> {
  noPositionals(positionals, 1);
  const { dir, schemas: schemaDir } = await dataDir(values);
  const schemas = await loadSchemas(schemaDir);
  const state = await replayJournal(join(dir, JOURNAL_FILE), schemas, { history: true });
  const entries = selectHistory(state.history, positionals[0], positiveInteger(values, "limit", Number.MAX_SAFE_INTEGER));
  if (values.json) io.stdout(`${JSON.stringify(historyJson(entries), null, 2)}\n`);
  else io.stdout(entries.length > 0 ? `${formatHistory(entries)}\n` : "no changes recorded\n");
  return 0;
}

export async function compactCommand(values: Values, positionals: string[], io: Io): Promise<number> {
  noPositionals(positionals);
  const { dir, schemas: schemaDir, sealing } = await dataDir(values);
  const schemas = await loadSchemas(schemaDir);
  const keep = positiveInteger(values, "keep", 1000, 0);
  const unlock = await lockDataDir(dir, "compact by hand (a running watcher compacts by itself)");
  try {
    const path = join(dir, JOURNAL_FILE);
    const { temporary, before, after, expected } = await compactJournal(path, schemas, keep, { sealing });
    await swapIn(temporary, path);
    io.stderr(`compacted ${path}: ${before} → ${after} bytes, revision ${expected.revision}\n`);
    return 0;
  } finally {
    await unlock();
  }
}

/** `cdp plan --dir D --schemas NEW`: what taking NEW would do to D's configuration, without writing. */
export async function planCommand(values: Values, positionals: string[], io: Io): Promise<number> {
  noPositionals(positionals);
  const dir = required(values, "dir");
  const target = required(values, "schemas");
  const settings = await openDataDir(dir, stderrLog);
  checkSecretsKey(dir, settings, await secretsKeyOption(values));
  const current = settings.schemas;
  if (!current) throw new CdpError("usage", `${dir} records no schema directory to compare with: record one with 'cdp init --dir ${dir} --schemas DIR'`);
  const inForce = await loadSchemas(current);
  const journalPath = join(dir, JOURNAL_FILE);
  const before = await replayJournal(journalPath, inForce);
  const upgrade = await planUpgrade(resolve(target), await readSchemaTexts(target), journalPath, new Map(), inForce);
  const plan = describePlan(before.apps, inForce, upgrade);
  if (values.json) io.stdout(`${JSON.stringify(plan, null, 2)}\n`);
  if (!plan.ok) {
    io.stderr(`cdp: refused: ${plan.reason}\n`);
    return 1;
  }
  if (!values.json) io.stdout(`${formatPlan(plan)}\n`);
  io.stderr(`the configuration holds under ${target} (the data directory's schemas are ${current})\n`);
  return 0;
}

/**
 * `cdp rekey --dir D --secrets-key OLD --new-key NEW`: every sealed value (and every secret still
 * in clear) of D's journal, cdp.rej and cdp.rollouts sealed with NEW (written when it does not
 * exist), then NEW recorded as the directory's key. Run again after a crash, it finishes the work.
 */
export async function rekeyCommand(values: Values, positionals: string[], io: Io): Promise<number> {
  noPositionals(positionals);
  const dir = required(values, "dir");
  const settings = await openDataDir(dir, stderrLog);
  const schemaDir = values.schemas ? resolve(values.schemas) : settings.schemas;
  if (!schemaDir) throw new CdpError("usage", "give --schemas (or CDP_SCHEMAS): the schemas say which values are secret");
  const newFile = values["new-key"];
  if (newFile === undefined) throw new CdpError("usage", "--new-key FILE is required: the key to seal with from now on (written when FILE does not exist)");
  const old = await secretsKeyOption(values);
  const created = !(await stat(resolve(newFile)).catch(() => undefined));
  const to = created ? await createSecretsKey(resolve(newFile)) : await readSecretsKey(resolve(newFile));
  // the recorded key is the old one, or already the new one (a rekey cut short, run again)
  if (settings.secretsKey !== to.id) checkSecretsKey(dir, settings, old);
  const schemas = await loadSchemas(schemaDir);
  const unlock = await lockDataDir(dir, "rekey (stop the watcher first)");
  try {
    const files = [
      { path: join(dir, JOURNAL_FILE), lines: true },
      { path: join(dir, REJECTS_FILE), lines: true },
      { path: join(dir, ROLLOUTS_FILE), lines: false },
    ];
    const written: { path: string; temporary: string; values: number }[] = [];
    for (const { path, lines } of files) {
      const resealed = await resealFile(path, schemas, to, lines);
      if (resealed) written.push({ path, ...resealed });
    }
    const journal = written.find(({ path }) => path === files[0]!.path);
    if (journal) await checkResealed(journal.path, journal.temporary, schemas);
    for (const { temporary, path } of written) await swapResealed(temporary, path);
    await recordSecretsKey(dir, to);
    const sealed = written.reduce((sum, file) => sum + file.values, 0);
    if (created) io.stderr(`wrote a new secrets key to ${resolve(newFile)} (key ${to.id})\n`);
    io.stderr(`sealed ${sealed} value${sealed === 1 ? "" : "s"} with key ${to.id} in ${dir}: from now on give --secrets-key ${resolve(newFile)}\n`);
    return 0;
  } finally {
    await unlock();
  }
}
