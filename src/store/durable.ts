// Files cdp owns (journal, rejects): appended in whole records, on disk before anyone is told.
import { constants, fdatasyncSync, fstatSync, writeSync } from "node:fs";
import { mkdir, open, readlink, rm, stat, symlink, type FileHandle } from "node:fs/promises";
import { dirname, join } from "node:path";
import { CdpError } from "../errors.js";

/**
 * A write failed (disk full, file too large, read-only) and the file was cut back to its last
 * durable length: nothing of the attempt remains, so it can be tried again.
 */
export class WriteFailed extends Error {
  override readonly name = "WriteFailed";
  constructor(
    readonly path: string,
    override readonly cause: NodeJS.ErrnoException,
  ) {
    super(`cannot write ${path}: ${cause.message}`);
  }
}

/**
 * What the file holds is no longer known: fsync failed (the kernel may have dropped the dirty
 * pages and will not say so again: PostgreSQL's "fsyncgate"), or a failed write could not be cut
 * back. Never retried: cdp stops, and the next start reads the journal as it really is.
 */
export class StorageFault extends Error {
  override readonly name = "StorageFault";
  constructor(
    readonly path: string,
    what: string,
    override readonly cause: NodeJS.ErrnoException,
  ) {
    super(`${what} ${path} failed (${cause.code ?? cause.message}): stopping; restart cdp to recover from the journal`);
  }
}

const SYNC_IN_PLACE = 64 << 10;

/**
 * A file cdp creates in a directory takes the directory's owner and group when cdp runs as root
 * (root's `cdp push` beside a watcher that runs as its service user), so that the watcher can
 * always read and write it.
 */
export async function takeDirectoryOwner(handle: FileHandle, dir: string): Promise<void> {
  if (process.getuid?.() !== 0) return;
  const owner = await stat(dir);
  const own = await handle.stat();
  if (own.uid !== owner.uid || own.gid !== owner.gid) await handle.chown(owner.uid, owner.gid);
}

/** An append-only file of cdp's own, created with mode 0600. */
/** The data directory's two append-only files, as the pipeline writes them. */
export interface Files {
  journal: DurableFile;
  rejects: DurableFile;
}

export class DurableFile {
  private constructor(
    readonly path: string,
    private handle: FileHandle,
    private length: number,
  ) {}

  static async open(path: string): Promise<DurableFile> {
    let created = false;
    let handle: FileHandle;
    try {
      handle = await open(path, constants.O_WRONLY | constants.O_APPEND);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
      handle = await open(path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT, 0o600);
      created = true;
      await takeDirectoryOwner(handle, dirname(path));
    }
    // a new file's name is durable only once its directory is
    if (created) await syncDirectory(dirname(path));
    return new DurableFile(path, handle, (await handle.stat()).size);
  }

  /** The durable length in bytes. */
  get size(): number {
    return this.length;
  }

  /** Append `text` and wait until it is on disk (fdatasync). Throws WriteFailed or StorageFault. */
  async appendDurably(text: string): Promise<void> {
    await (await this.appendUnsynced(text))();
  }

  /**
   * Append `text` to the page cache (throws WriteFailed); returns its fsync (throws StorageFault),
   * to be awaited before anything else is written. Only for what is committed elsewhere: a
   * fleet's records are applied between the two (a host that loses power catches up from etcd).
   */
  async appendUnsynced(text: string): Promise<() => Promise<void>> {
    if (text === "") return async () => {};
    const bytes = Buffer.from(text, "utf8");
    try {
      // Into the page cache synchronously: microseconds, where a thread-pool trip costs ~0.1 ms.
      for (let written = 0; written < bytes.length; ) written += writeSync(this.handle.fd, bytes, written);
    } catch (error) {
      await this.#cutBack(error as NodeJS.ErrnoException);
      throw new WriteFailed(this.path, error as NodeJS.ErrnoException);
    }
    return async () => {
      try {
        // A small append (one interactive change) is synced in place: a thread-pool trip nearly
        // doubled the echo->subscriber latency (npm run bench), and blocking ~0.25 ms for a change
        // is nothing to the host. A burst's large write waits off the event loop.
        if (bytes.length < SYNC_IN_PLACE) fdatasyncSync(this.handle.fd);
        else await this.handle.datasync();
      } catch (error) {
        throw new StorageFault(this.path, "fsync of", error as NodeJS.ErrnoException);
      }
      this.length += bytes.length;
    };
  }

  /** Cut the file to `length` bytes, durably (used to drop a torn or uncommitted tail). */
  async truncateDurably(length: number): Promise<void> {
    await this.handle.truncate(length);
    await this.handle.datasync();
    this.length = length;
  }

  async close(): Promise<void> {
    await this.handle.close();
  }

  // A write may have landed in part (a full disk takes what fits): remove it, or the next
  // append would follow half a record. If even that fails, stop: the next start repairs the tail.
  async #cutBack(cause: NodeJS.ErrnoException): Promise<void> {
    try {
      // nothing landed (a read-only disk refuses even the truncate): nothing to cut
      if (fstatSync(this.handle.fd).size === this.length) return;
      await this.handle.truncate(this.length);
    } catch {
      throw new StorageFault(this.path, "cutting back a failed write to", cause);
    }
  }
}

/** Create the data directory (mode 0700) if it is missing; say so plainly when it cannot be one. */
export async function ensureDataDir(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
  } catch (error) {
    throw new CdpError("usage", `cannot use ${dir} as the data directory: ${(error as Error).message}`);
  }
}

export async function syncDirectory(path: string): Promise<void> {
  const directory = await open(path, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await directory.sync();
  } finally {
    await directory.close();
  }
}

/**
 * Make this process the only cdp that writes `dir` (two watchers would apply every line twice).
 * The lock is a symbolic link to the owner's pid: created atomically, and without a data block,
 * so it works on a full disk. A lock whose process is gone (kill -9) is taken over.
 * Resolves to the function that releases it.
 */
export async function lockDataDir(dir: string, what: string, taken?: (message: string) => void): Promise<() => Promise<void>> {
  const path = join(dir, "cdp.lock");
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await symlink(String(process.pid), path);
      return () => rm(path, { force: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    }
    const owner = Number(await readlink(path).catch(() => ""));
    if (owner > 0 && owner !== process.pid && isAlive(owner)) {
      throw new CdpError("busy", `${dir} is in use by another cdp (pid ${owner}): stop it before you ${what}`);
    }
    await rm(path, { force: true }); // left by a process that is gone
    taken?.(
      owner > 0
        ? `took over the lock of ${dir} from pid ${owner}, which is gone (stopped without releasing it, e.g. kill -9)`
        : `took over a damaged lock of ${dir}`,
    );
  }
  throw new CdpError("busy", `cannot lock ${dir}: another cdp is starting there`);
}

/** The pid of the cdp that holds `dir`'s lock (a running watcher), if any. */
export async function lockHolder(dir: string): Promise<number | undefined> {
  const owner = Number(await readlink(join(dir, "cdp.lock")).catch(() => ""));
  return owner > 0 && isAlive(owner) ? owner : undefined;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
