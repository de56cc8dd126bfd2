// `cdp rekey`: every sealed value of a data directory's files sealed again with a new key (and
// every secret still in clear, sealed). Each file is rewritten beside itself, fsync'd and renamed
// over, as compaction does: a crash leaves each file whole, under the old key or the new one, and
// running rekey again (both keys are known to it) finishes the work.
import { createReadStream } from "node:fs";
import { open, rename, stat } from "node:fs/promises";
import { dirname } from "node:path";
import { createInterface } from "node:readline";
import { isDeepStrictEqual } from "node:util";
import { CdpError } from "../errors.js";
import { openSealed, type SecretsKey } from "../lines/sealed.js";
import { sealLine } from "../schemas/sealing.js";
import type { Schemas } from "../schemas/schemas.js";
import { syncDirectory, takeDirectoryOwner } from "./durable.js";
import { replayJournal } from "./journal.js";

const SEALED_ANYWHERE = /!sealed:v1:[0-9a-f]{12}:[A-Za-z0-9_-]+/g;

/** A file rewritten beside the original, and how many values it sealed with the new key. */
export interface Resealed {
  temporary: string;
  values: number;
}

/**
 * Rewrite `path` with each sealed value sealed again with `to`; `lines` (the journal, cdp.rej):
 * also each change line that sets a secret in clear. A missing file is left missing.
 */
export async function resealFile(path: string, schemas: Schemas, to: SecretsKey, lines: boolean): Promise<Resealed | undefined> {
  if (!(await stat(path).catch(() => undefined))) return undefined;
  const temporary = `${path}.rekey`;
  const file = await open(temporary, "w", 0o600);
  let values = 0;
  try {
    await takeDirectoryOwner(file, dirname(path));
    let pending = "";
    const input = createInterface({ input: createReadStream(path, { encoding: "utf8" }), crlfDelay: Infinity });
    for await (const text of input) {
      let line = text.replace(SEALED_ANYWHERE, (sealed) => {
        const opened = openSealed(sealed);
        if (!opened.ok) throw new CdpError("usage", `${path}: a value ${opened.reason}`);
        values++;
        return to.seal(opened.text);
      });
      if (lines && !line.trimStart().startsWith("#")) {
        const sealed = sealLine(line, schemas, to);
        if (sealed !== line) values++;
        line = sealed;
      }
      pending += `${line}\n`;
      if (pending.length >= 1 << 16) {
        await file.write(pending);
        pending = "";
      }
    }
    await file.write(pending);
    await file.sync();
  } finally {
    await file.close();
  }
  return { temporary, values };
}

/** The rewritten journal must replay to the same configuration as the journal it replaces. */
export async function checkResealed(journal: string, temporary: string, schemas: Schemas): Promise<void> {
  const [before, after] = [await replayJournal(journal, schemas), await replayJournal(temporary, schemas)];
  if (before.revision !== after.revision || !isDeepStrictEqual(before.apps, after.apps))
    throw new Error(`the journal sealed with the new key does not replay to the same configuration (kept as it was; ${temporary} is left to look at)`);
}

/** Put a rewritten file in place of the original (atomically), then make the rename durable. */
export async function swapResealed(temporary: string, path: string): Promise<void> {
  await rename(temporary, path);
  await syncDirectory(dirname(path));
}
