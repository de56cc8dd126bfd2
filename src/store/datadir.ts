// The data directory is created once, on purpose (`cdp init`, as initdb is for PostgreSQL), and
// marked with a small settings file. Every other command refuses a directory without it: a typo
// in --dir, or an unmounted volume's empty mount point, must never look like a fresh start that
// serves the schema defaults (consul-template #727: empty files after Consul lost its state).
import { mkdir, open, readFile, rename, stat } from "node:fs/promises";
import { join } from "node:path";
import { INBOX_FILE } from "../inbox/inbox.js";
import type { Logger } from "pino";
import { CdpError } from "../errors.js";
import { syncDirectory, takeDirectoryOwner } from "./durable.js";
import { JOURNAL_FILE } from "./journal.js";
import type { SecretsKey } from "../lines/sealed.js";

/** The marker and the settings the data directory remembers. */
export const SETTINGS_FILE = "cdp.conf";

/** What `cdp.conf` holds (JSON). */
export interface DataDirSettings {
  /** The format of this file. */
  cdp: 1;
  /** When the directory was initialised (or adopted). */
  created: string;
  /** The schema directory given at init: read commands use it when none is given. */
  schemas?: string;
  /** The id of the key secret values are sealed with (never the key): commands refuse to run without that key. */
  secretsKey?: string;
}

/**
 * Create and mark `dir` (idempotent): "created", "adopted" (an earlier cdp's data) or "unchanged".
 * With a secrets key, its id is recorded (from then on, every command needs that key).
 */
export async function initDataDir(dir: string, schemas: string, sealing?: SecretsKey): Promise<"created" | "adopted" | "unchanged"> {
  const recorded = await readSettings(dir);
  if (recorded) {
    if (recorded.schemas === schemas || recorded.schemas === undefined) {
      if (sealing) checkSecretsKey(dir, recorded, sealing);
      if (recorded.schemas === undefined || (sealing && recorded.secretsKey === undefined))
        await writeSettings(dir, { ...recorded, schemas, ...(sealing ? { secretsKey: sealing.id } : {}) });
      return "unchanged";
    }
    throw new CdpError(
      "usage",
      `${dir} is already initialised with the schemas ${recorded.schemas}; to use ${schemas}, edit ${join(dir, SETTINGS_FILE)} or pass --schemas to each command`,
    );
  }
  const existed = await stat(dir).then(
    (info) => info.isDirectory(),
    () => false,
  );
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
  } catch (error) {
    throw new CdpError("usage", `cannot create the data directory ${dir}: ${(error as Error).message}`);
  }
  const adopted = existed && (await exists(join(dir, JOURNAL_FILE)));
  await writeSettings(dir, { cdp: 1, created: new Date().toISOString(), schemas, ...(sealing ? { secretsKey: sealing.id } : {}) });
  return adopted ? "adopted" : "created";
}

/**
 * Refuse to go on without the key the directory's secrets are sealed with, or with another key
 * (a usage error: exit 2, naming the key's id and the option).
 */
export function checkSecretsKey(dir: string, settings: DataDirSettings, sealing: SecretsKey | undefined): void {
  const needed = settings.secretsKey;
  if (needed === undefined) return;
  if (!sealing)
    throw new CdpError(
      "usage",
      `the data directory ${dir} keeps its secret values sealed with secrets key ${needed}: give that key with --secrets-key FILE (or CDP_SECRETS_KEY_FILE)`,
    );
  if (sealing.id !== needed)
    throw new CdpError("usage", `the secrets key given is key ${sealing.id}, but the data directory ${dir} keeps its secret values sealed with key ${needed}`);
}

/** From now on the directory's secrets are sealed with this key (a watcher given a key; cdp rekey). */
export async function recordSecretsKey(dir: string, sealing: SecretsKey): Promise<void> {
  const settings = await openDataDir(dir);
  if (settings.secretsKey !== sealing.id) await writeSettings(dir, { ...settings, secretsKey: sealing.id });
}

/**
 * The settings of an initialised data directory. A directory an earlier cdp wrote (a journal,
 * no marker) is adopted, with a log line. Anything else is refused with the fix (exit 2).
 */
export async function openDataDir(dir: string, log?: Pick<Logger, "info">): Promise<DataDirSettings> {
  const recorded = await readSettings(dir);
  if (recorded) return recorded;
  const info = await stat(dir).catch(() => undefined);
  const fix = `create it with 'cdp init --dir ${dir} --schemas DIR'`;
  if (!info) throw new CdpError("usage", `the data directory ${dir} does not exist: ${fix} (is --dir right, and the volume mounted?)`);
  if (!info.isDirectory()) throw new CdpError("usage", `${dir} is not a directory: --dir names cdp's data directory`);
  if (await exists(join(dir, JOURNAL_FILE))) {
    const settings: DataDirSettings = { cdp: 1, created: new Date().toISOString() };
    await writeSettings(dir, settings);
    log?.info({ dir }, `adopted ${dir}, written by an earlier cdp: marked it as a data directory (${SETTINGS_FILE})`);
    return settings;
  }
  throw new CdpError(
    "usage",
    `${dir} is not an initialised cdp data directory (no ${SETTINGS_FILE}): if it is new, ${fix}; if it should hold cdp's data, is the volume mounted?`,
  );
}

/** Whether `dir` is an initialised data directory (it has its settings file). */
export async function isDataDir(dir: string): Promise<boolean> {
  return (await readSettings(dir)) !== undefined;
}

async function readSettings(dir: string): Promise<DataDirSettings | undefined> {
  let text: string;
  try {
    text = await readFile(join(dir, SETTINGS_FILE), "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return undefined;
    throw new CdpError("usage", `cannot read ${join(dir, SETTINGS_FILE)}: ${(error as Error).message}`);
  }
  try {
    const settings = JSON.parse(text) as DataDirSettings;
    if (settings.cdp !== 1) throw new Error(`unknown format ${JSON.stringify(settings.cdp)}`);
    return settings;
  } catch (error) {
    throw new CdpError("usage", `${join(dir, SETTINGS_FILE)} is not a cdp settings file: ${(error as Error).message}`);
  }
}

// Written whole or not at all: a temporary file, fsync'd, renamed over, then the directory fsync'd.
async function writeSettings(dir: string, settings: DataDirSettings): Promise<void> {
  const path = join(dir, SETTINGS_FILE);
  const file = await open(`${path}.tmp`, "w", 0o600);
  try {
    await takeDirectoryOwner(file, dir); // root's cdp init of a service user's directory
    await file.writeFile(`${JSON.stringify(settings, null, 2)}\n`);
    await file.sync();
  } finally {
    await file.close();
  }
  await rename(`${path}.tmp`, path);
  await syncDirectory(dir);
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/**
 * Whoever can write the inbox can change the configuration: say so when anyone can (a world-
 * writable cdp.new or data directory), or when a group can replace cdp's own files (a group-
 * writable data directory). A group-writable cdp.new is how operators are let in: no warning.
 */
export async function warnIfOthersCanWrite(dir: string, log: Logger): Promise<void> {
  for (const [path, mask, who] of [
    [dir, 0o022, "group or others"],
    [join(dir, INBOX_FILE), 0o002, "anyone"],
  ] as const) {
    const info = await stat(path).catch(() => undefined);
    if (info && (info.mode & mask) !== 0) {
      const mode = (info.mode & 0o777).toString(8);
      log.warn({ path, mode }, `${path} is writable by ${who} (mode ${mode}): whoever can write there can change the configuration`);
    }
  }
}
