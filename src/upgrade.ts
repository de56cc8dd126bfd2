// Live schema upgrades (the appup of cdp): notice changed schema files, and decide whether the
// configuration holds under them. The pipeline applies the verdict between batches.
import { watch } from "chokidar";
import type { Logger } from "pino";
import { CdpError } from "./errors.js";
import { replayJournal } from "./journal.js";
import { compileSchemas, type SchemaTexts, type Schemas } from "./schemas.js";
import type { AppValidator } from "./validate.js";
import type { AppConfig } from "./values.js";

/** The names of the files that differ between two readings. */
export function changedFiles(before: SchemaTexts, after: SchemaTexts): string[] {
  const names = new Set([...before.keys(), ...after.keys()]);
  return [...names].filter((name) => before.get(name) !== after.get(name)).sort();
}

export type Upgrade = { ok: true; schemas: Schemas; apps: Map<string, AppConfig> } | { ok: false; reason: string };

/**
 * Compile the new schemas and replay the journal under them: the configuration as it would be,
 * or why the new schemas cannot be taken (they do not compile, or the configuration breaks them,
 * a removed app's configured values included).
 */
export async function planUpgrade(
  schemaDir: string,
  texts: SchemaTexts,
  journalPath: string,
  validators: ReadonlyMap<string, readonly AppValidator[]>,
): Promise<Upgrade> {
  try {
    const schemas = compileSchemas(schemaDir, texts);
    const { apps } = await replayJournal(journalPath, schemas, { validators });
    return { ok: true, schemas, apps };
  } catch (error) {
    if (error instanceof CdpError) return { ok: false, reason: error.message };
    throw error;
  }
}

/** Call `hint` when the schema directory may have changed: on file events and every `pollMs`. */
export function watchSchemaDir(dir: string, pollMs: number, log: Logger, hint: () => void): () => Promise<void> {
  const watcher = watch(dir, { depth: 0, ignoreInitial: true });
  watcher.on("all", hint);
  watcher.on("raw", hint);
  watcher.on("error", (error) => log.error({ err: error }, "watching the schema directory failed; the periodic check goes on"));
  const timer = setInterval(hint, pollMs);
  return async () => {
    clearInterval(timer);
    await watcher.close();
  };
}
