// `cdp status`: the state of a data directory and of the watcher on it, read from the files
// alone (the watcher needs no API for it): the lock says whether one runs, `cdp.watcher` what it
// serves, the journal its revision and inbox position, cdp.rej the last rejection.
import { createHash } from "node:crypto";
import { lstat, readFile } from "node:fs/promises";
import { join } from "node:path";
import { lockHolder } from "../store/durable.js";
import { INBOX_FILE, type InboxPosition } from "../inbox/inbox.js";
import { JOURNAL_FILE, replayJournal } from "../store/journal.js";
import { identityOf } from "../inbox/rotation.js";
import { recentRejections, REJECTS_FILE, type ServedRejection } from "../store/rejects.js";
import { readWatcherInfo, type WatcherInfo } from "../store/watcher.js";
import { loadSchemas, readSchemaTexts } from "../schemas/schemas.js";

export interface Status {
  dir: string;
  schemas: string;
  watcher: (WatcherInfo & { running: true }) | { running: false };
  revision: number;
  /** Complete lines in cdp.new after the last one processed. */
  waiting: number;
  lastRejection?: ServedRejection;
  /** version: what the file declares (null: none, so 1); inForce: the version the journal records (for apps that use versions). */
  apps: { app: string; file: string; version: number | null; inForce?: number; sha256: string }[];
}

export async function readStatus(dir: string, schemaDir: string): Promise<Status> {
  const schemas = await loadSchemas(schemaDir);
  const texts = await readSchemaTexts(schemaDir);
  const state = await replayJournal(join(dir, JOURNAL_FILE), schemas);
  const pid = await lockHolder(dir);
  const announced = pid === undefined ? undefined : await readWatcherInfo(dir);
  const [lastRejection] = await recentRejections(join(dir, REJECTS_FILE), schemas, 1);
  const apps = [...schemas.values()].map(({ app, file }) => {
    const text = texts.get(`${app}.schema.json`) ?? "";
    const version = (JSON.parse(text) as { "x-cdp-version"?: unknown })["x-cdp-version"];
    const inForce = state.versions.get(app)?.version;
    return {
      app,
      file,
      version: typeof version === "number" ? version : null,
      ...(inForce === undefined ? {} : { inForce }),
      sha256: createHash("sha256").update(text).digest("hex").slice(0, 12),
    };
  });
  return {
    dir,
    schemas: schemaDir,
    watcher: pid === undefined ? { running: false } : { running: true, ...(announced?.pid === pid ? announced : { pid, started: "" }) },
    revision: state.revision,
    waiting: await linesWaiting(dir, state.position),
    ...(lastRejection ? { lastRejection } : {}),
    apps,
  };
}

/** Complete lines of cdp.new after the position (all of them when cdp.new is another file). */
async function linesWaiting(dir: string, position: InboxPosition | undefined): Promise<number> {
  const path = join(dir, INBOX_FILE);
  const info = await lstat(path, { bigint: true }).catch(() => undefined);
  if (!info?.isFile()) return 0;
  const text = await readFile(path);
  const from = position && position.file === identityOf(info) && position.offset <= text.length ? position.offset : 0;
  let count = 0;
  for (let at = text.indexOf(0x0a, from); at !== -1; at = text.indexOf(0x0a, at + 1)) count++;
  return count;
}
