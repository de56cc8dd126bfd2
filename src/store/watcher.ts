// The running watcher's word about itself: `cdp.watcher` in the data directory, written when it
// starts following the inbox and removed when it stops. The commands read it (cdp status, push,
// rollout) to find the watcher's sidecar, fleet and rendered apps.
import { readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";

/** What a running watcher says of itself, in `cdp.watcher` (removed when it stops). */
export interface WatcherInfo {
  pid: number;
  started: string;
  /** The sidecar's address, when it serves one. */
  url?: string;
  /** Its fleet, when it is in one. */
  fleet?: { prefix: string; host: string };
  /** The apps whose config it renders for a service: a change to them waits for the service's verdict (cdp.rendered). */
  render?: string[];
}

export const WATCHER_FILE = "cdp.watcher";

/** What the running watcher said of itself, if one runs and said it. */
export async function readWatcherInfo(dir: string): Promise<WatcherInfo | undefined> {
  return readFile(join(dir, WATCHER_FILE), "utf8").then(
    (text) => JSON.parse(text) as WatcherInfo,
    () => undefined,
  );
}

export async function announceWatcher(dir: string, info: WatcherInfo): Promise<() => Promise<void>> {
  const path = join(dir, WATCHER_FILE);
  await writeFile(`${path}.tmp`, `${JSON.stringify(info, null, 2)}\n`, { mode: 0o600 });
  await rename(`${path}.tmp`, path);
  return () => rm(path, { force: true });
}
