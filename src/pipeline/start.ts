// Starting the pipeline: inbox -> parse -> validate -> rejects + journal (durable) -> table
// (announce), with render targets after it. This file is start-up; run.ts is the running pipeline.
import { join } from "node:path";
import { lockDataDir } from "../store/durable.js";
import { checkSecretsKey, openDataDir, recordSecretsKey } from "../store/datadir.js";
import { CdpError } from "../errors.js";
import { JOURNAL_FILE, openJournal, replayForStart } from "../store/journal.js";
import { Run, type Loaded } from "./run.js";
import { compileSchemas, readSchemaTexts, type Schemas } from "../schemas/schemas.js";
import { takeSchemasAtStart, unexpectedVersion } from "./versions.js";
import { readRenderVerdicts } from "./receipts.js";

import type { Pipeline, PipelineOptions } from "../types.js";

/**
 * Start the pipeline, in order: take the data directory (one watcher at a time), load the schemas
 * and replay the journal (refusing an invalid one), open the commit point, catch up with a fleet,
 * follow the inbox. Then batches take their turns until `stop()`.
 */
export async function startPipeline(options: PipelineOptions): Promise<Pipeline> {
  const { dir, log } = options;
  checkSecretsKey(dir, await openDataDir(dir, log), options.sealing);
  const unlock = await lockDataDir(dir, "start another watcher", (message) => log.warn(message));
  try {
    const run = await Run.open(options, unlock, await loadAtStart(options));
    await run.start();
    // from now on the journal may hold values sealed with it: every command needs that key
    if (options.sealing) await recordSecretsKey(dir, options.sealing);
    return run;
  } catch (error) {
    await unlock();
    throw error;
  }
}

/**
 * Load what the run starts from, in order: the schemas (and the versions the code expects), the
 * render files (an operator's mistake there is found before anything is written), the journal
 * replayed and opened, the schema versions taken.
 */
async function loadAtStart(options: PipelineOptions): Promise<Loaded> {
  const journalPath = join(options.dir, JOURNAL_FILE);
  const texts = await readSchemaTexts(options.schemas);
  const schemas = compileSchemas(options.schemas, texts);
  const unexpected = unexpectedVersion(schemas, options.expect);
  if (unexpected) throw new CdpError("bootstrap", unexpected);
  const render = options.render.length > 0 ? await loadRendering(options.render, schemas, options.dir, options.schemas) : undefined;
  const replayed = await replayForStart(journalPath, schemas, { validators: options.validators, fleet: options.fleet !== undefined, log: options.log });
  const journal = await openJournal(journalPath, replayed);
  // schema versions changed while cdp was stopped: migrated before anything is served
  const { state, inForce } = await takeSchemasAtStart(replayed, schemas, texts, journal, options);
  const held = unexpectedVersion(inForce, options.expect); // an app whose new version was vetoed stays at its old one
  if (held) throw new CdpError("bootstrap", held);
  return { journalPath, schemas: inForce, files: schemas, texts, state, journal, ...(render ? { render } : {}) };
}

async function loadRendering(paths: readonly string[], schemas: Schemas, dir: string, schemaDir: string): Promise<NonNullable<Loaded["render"]>> {
  const [{ loadRenderFiles }, { Renderer }] = await Promise.all([import("../render/targets.js"), import("../render/renderer.js")]);
  const recorded = (await readRenderVerdicts(dir))?.good;
  return { targets: await loadRenderFiles(paths, schemas, [dir, schemaDir]), Renderer, ...(recorded ? { recorded } : {}) };
}
