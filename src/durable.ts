// Files cdp owns (journal, rejects): appended in whole records, on disk before anyone is told.
import { constants } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { dirname } from "node:path";

/** An append-only file of cdp's own, created with mode 0600. */
export class DurableFile {
  private constructor(
    readonly path: string,
    private handle: FileHandle,
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
    }
    // a new file's name is durable only once its directory is
    if (created) await syncDirectory(dirname(path));
    return new DurableFile(path, handle);
  }

  /** Append `text` and wait until it is on disk (fdatasync). */
  async appendDurably(text: string): Promise<void> {
    if (text === "") return;
    await this.handle.appendFile(text, "utf8");
    await this.handle.datasync();
  }

  /** Cut the file to `length` bytes, durably (used to drop a torn or uncommitted tail). */
  async truncateDurably(length: number): Promise<void> {
    await this.handle.truncate(length);
    await this.handle.datasync();
  }

  async close(): Promise<void> {
    await this.handle.close();
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
