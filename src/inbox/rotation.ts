// Which inbox file to read, and from where, when `cdp.new` is not simply the file cdp was reading:
// rotated by logrotate (`create` or `copytruncate`, any number of times while cdp was stopped,
// paused or slow), re-saved by an editor, removed. A file's identity (inode + birth time) says
// where a renamed file went; its content says whether a new file is an old one re-saved or copied
// (the idea of Vector's checksum fingerprints and Fluent Bit's tail database): the SHA-256 of the
// bytes before the saved offset is recorded with the position.
import { createHash, type Hash } from "node:crypto";
import { constants, fstatSync, readSync, type BigIntStats } from "node:fs";
import { lstat, open, readdir, type FileHandle } from "node:fs/promises";
import { join } from "node:path";

export const INBOX_FILE = "cdp.new";

/** Where reading stands: the file (by identity, not name), the byte offset and the last line number. */
export interface InboxPosition {
  file: string;
  offset: number;
  line: number;
  /** The fingerprint of the file's bytes before `offset` (absent in journals of older cdp versions). */
  check?: string;
}

/** An inbox file found in the data directory. */
export interface InboxFile {
  name: string;
  path: string;
  id: string;
  size: number;
  modifiedNs: bigint;
}

// Compressed rotations cannot be tailed, and editors' backups (`cdp.new~`) are the past, not the inbox.
const NOT_INBOX = /(?:\.(?:gz|bz2|xz|zst|lz4|Z|zip|swp)|~)$/;

/** cdp.new, or one of its rotations (`cdp.new.1`, `cdp.new-20261127`, `cdp.new.old`, …). */
export function isInboxName(name: string): boolean {
  return name === INBOX_FILE || (/^cdp\.new[.-]./.test(name) && !NOT_INBOX.test(name));
}

export function identityOf(info: BigIntStats): string {
  return `${info.ino}-${info.birthtimeNs}`;
}

/** Why a path cannot be the inbox (a FIFO would block a reader for good, a link leads anywhere), or undefined. */
export function notRegular(
  info: { isFile(): boolean; isSymbolicLink(): boolean; isFIFO(): boolean; isDirectory(): boolean },
  path: string,
): string | undefined {
  if (info.isFile()) return undefined;
  const what = info.isSymbolicLink()
    ? "a symbolic link (cdp never follows links)"
    : info.isFIFO()
      ? "a FIFO"
      : info.isDirectory()
        ? "a directory"
        : "not a regular file";
  return `${path} is ${what}: remove it; cdp reads only a regular file there`;
}

/**
 * The regular inbox files of the directory, oldest first and cdp.new last: numbered rotations by
 * their number (`cdp.new.2` is older than `cdp.new.1`, as logrotate names them, whatever a late
 * write did to their times), and other rotated names (`cdp.new-20261127`, logrotate's
 * `cdp.new-….backup`, `cdp.new.old`) placed among them by their last modification. Links, FIFOs
 * and the like are left out.
 */
export async function listInboxFiles(dir: string): Promise<InboxFile[]> {
  // A rotation renames one file after the other: a listing taken in between can miss a file or
  // see one twice, so the directory is listed until two listings in a row agree.
  let files = await listOnce(dir);
  for (let tries = 0; tries < 50 && files.some((file) => file.name !== INBOX_FILE); tries++) {
    await new Promise((resolve) => setTimeout(resolve, 2));
    const again = await listOnce(dir);
    const same = again.length === files.length && again.every((file, i) => file.name === files[i]!.name && file.id === files[i]!.id);
    files = again;
    if (same) break;
  }
  return files;
}

async function listOnce(dir: string): Promise<InboxFile[]> {
  const files: InboxFile[] = [];
  for (const name of await readdir(dir)) {
    if (!isInboxName(name)) continue;
    const path = join(dir, name);
    const info = await lstat(path, { bigint: true }).catch(() => undefined);
    if (!info?.isFile()) continue;
    files.push({ name, path, id: identityOf(info), size: Number(info.size), modifiedNs: info.mtimeNs });
  }
  const number = (file: InboxFile) => Number(/^cdp\.new\.(\d+)$/.exec(file.name)?.[1] ?? NaN);
  const numbered = files.filter((file) => !Number.isNaN(number(file))).sort((a, b) => number(b) - number(a));
  const others = files
    .filter((file) => file.name !== INBOX_FILE && Number.isNaN(number(file)))
    .sort((a, b) => (a.modifiedNs < b.modifiedNs ? -1 : a.modifiedNs > b.modifiedNs ? 1 : 0));
  const ordered: InboxFile[] = [];
  for (const file of numbered) {
    while (others.length > 0 && others[0]!.modifiedNs < file.modifiedNs) ordered.push(others.shift()!);
    ordered.push(file);
  }
  return [...ordered, ...others, ...files.filter((file) => file.name === INBOX_FILE)];
}

/** The file listed was renamed before it could be opened (a rotation in between): list again. */
export class Moved extends Error {}

/** Run `task` (which lists the directory) again while a file it listed moves under it, ten times at most. */
export async function whileMoving<T>(task: () => Promise<T>): Promise<T> {
  for (let tries = 1; ; tries++) {
    try {
      return await task();
    } catch (error) {
      if (!(error instanceof Moved) || tries === 10) throw error;
    }
  }
}

/**
 * Open a path for reading only if it is a regular file: never through a link, never blocking on a
 * FIFO; with `id`, only if it is still that file (else Moved).
 */
export async function openRegular(path: string, id?: string): Promise<FileHandle | undefined> {
  let handle: FileHandle;
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return undefined;
    if (code === "ELOOP")
      throw Object.assign(new Error(`${path} is a symbolic link (cdp never follows links): remove it; cdp reads only a regular file there`), { code: "ELOOP" });
    throw error;
  }
  const info = await handle.stat({ bigint: true });
  if (id !== undefined && identityOf(info) !== id) {
    await handle.close();
    throw new Moved(path);
  }
  const why = notRegular(
    { isFile: () => info.isFile(), isSymbolicLink: () => false, isFIFO: () => info.isFIFO(), isDirectory: () => info.isDirectory() },
    path,
  );
  if (why) {
    await handle.close();
    throw Object.assign(new Error(why), { code: "ENOTREG" });
  }
  return handle;
}

/** The fingerprint of a running hash (the hash goes on). */
export function fingerprint(hash: Hash): string {
  return hash.copy().digest("hex").slice(0, 16);
}

/** The hash of the file's first `length` bytes, or undefined when it has fewer. */
export function hashPrefix(fd: number, length: number): Hash | undefined {
  if (Number(fstatSync(fd).size) < length) return undefined;
  const hash = createHash("sha256");
  const buffer = Buffer.allocUnsafe(Math.min(length, 1 << 20));
  for (let at = 0; at < length; ) {
    const read = readSync(fd, buffer, 0, Math.min(buffer.length, length - at), at);
    if (read === 0) return undefined;
    hash.update(buffer.subarray(0, read));
    at += read;
  }
  return hash;
}

/** A file holding `position`'s bytes before its offset, opened, with the hash of those bytes. */
export interface Resumed {
  file: InboxFile;
  handle: FileHandle;
  hash: Hash;
  offset: number;
}

/**
 * Whether `copy` is a copy of what `file` holds now (an operator's `cp`), rather than of what it
 * held before it was truncated (copytruncate): `file` begins with the copy's first and last 4 KiB.
 */
export async function holdsCopy(file: InboxFile, copy: InboxFile): Promise<boolean> {
  if (file.size < copy.size) return false;
  // never through a link or into a FIFO; a file that moved meanwhile is not taken for unread lines
  const [a, b] = await Promise.all([openRegular(file.path, file.id).catch(() => undefined), openRegular(copy.path, copy.id).catch(() => undefined)]);
  try {
    if (!a || !b) return true;
    for (const at of new Set([0, Math.max(0, copy.size - 4096)])) {
      const length = Math.min(4096, copy.size - at);
      const [x, y] = [Buffer.alloc(length), Buffer.alloc(length)];
      await Promise.all([a.read(x, 0, length, at), b.read(y, 0, length, at)]);
      if (!x.equals(y)) return false;
    }
    return true;
  } finally {
    await Promise.all([a?.close(), b?.close()]);
  }
}

/** Whether `file` begins with the very bytes `position` was at (same fingerprint), opened there. */
export async function resumeIn(file: InboxFile, position: InboxPosition): Promise<Resumed | undefined> {
  if (file.size < position.offset) return undefined;
  const handle = await openRegular(file.path, file.id).catch((error: unknown) => {
    if (error instanceof Moved) throw error;
    return undefined;
  });
  if (!handle) return undefined;
  const hash = hashPrefix(handle.fd, position.offset);
  if (hash && (position.check === undefined || fingerprint(hash) === position.check)) return { file, handle, hash, offset: position.offset };
  await handle.close();
  return undefined;
}

/** The first of `files` that holds `position`'s bytes (a copy, or the file re-saved), opened there. */
export async function findCopy(files: InboxFile[], position: InboxPosition): Promise<Resumed | undefined> {
  if (position.check === undefined || position.offset === 0) return undefined;
  for (const file of files) {
    const resumed = await resumeIn(file, position);
    if (resumed) return resumed;
  }
  return undefined;
}
