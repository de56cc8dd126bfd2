// A host that starts with newer schema files moves the whole fleet to them (a rolling upgrade):
// the migration is one revision of the fleet's log, judged like any batch, and every host applies
// it where its own files are of that version (fleet/member.ts).
import type { Logger } from "pino";
import type { InboxPosition } from "../inbox/inbox.js";
import type { AppConfig } from "../lines/values.js";
import { SCHEMA_SUFFIX, type Schemas } from "../schemas/schemas.js";
import type { AppValidator } from "../schemas/validate.js";
import { migrateChecked } from "../store/installed.js";
import type { SchemaEntries } from "../store/journal.js";
import type { ConfigTable } from "../store/table.js";
import type { FleetMember } from "./member.js";

/**
 * Move the fleet to this host's newer schema files (or, with `down`, its older ones too): one fleet
 * revision, judged against the fleet's state like any batch (another host may move it first: then
 * judged again). Down only when the operator says so (--fleet-downgrade).
 */
export async function moveFleet(
  member: Pick<FleetMember, "commit" | "untilRevision" | "head">,
  host: {
    inForce: () => Schemas;
    files: Schemas;
    down: boolean;
    table: ConfigTable;
    validators: ReadonlyMap<string, readonly AppValidator[]>;
    host: string;
    seq: number;
    position: InboxPosition | undefined;
    stopping: () => boolean;
    log: Logger;
  },
): Promise<void> {
  while (!host.stopping()) {
    const judgedAt = host.table.revision;
    const entries = fleetMigration(host.inForce(), host.files, host.down, (app) => host.table.config(app), host.validators, host.log);
    const apps = Object.keys(entries);
    if (apps.length === 0) return;
    const source = `schema:${apps.map((app) => `${app}${SCHEMA_SUFFIX}`).join(",")}`;
    const position = host.position ?? { file: "", offset: 0, line: 0 }; // a migration moves no inbox
    const committed = await member.commit(judgedAt, [
      { line: "", migration: entries, host: host.host, source, time: new Date().toISOString(), seq: host.seq, position },
    ]);
    if (committed === undefined) return;
    // committed: it comes back through the fleet's log, and the member applies it; or judged again
    await member.untilRevision(committed ? judgedAt + 1 : await member.head());
  }
}

/** The apps whose schema files are newer than the versions in force, migrated and checked: a fleet migration's entries. */
function fleetMigration(
  inForce: Schemas,
  files: Schemas,
  down: boolean,
  config: (app: string) => AppConfig,
  validators: ReadonlyMap<string, readonly AppValidator[]>,
  log: Logger,
): SchemaEntries {
  const entries: SchemaEntries = {};
  for (const [app, file] of files) {
    const held = inForce.get(app);
    if (!held || file.version === held.version || (file.version < held.version && !down)) continue;
    const steps = new Map([...held.steps, ...file.steps]);
    try {
      migrateChecked(app, config(app), held.version, file, steps, validators.get(app) ?? []);
    } catch (error) {
      log.error(
        { app, reason: (error as Error).message },
        `cannot move the fleet's ${app} to schema version ${file.version}: it stays at version ${held.version}`,
      );
      continue;
    }
    entries[app] = { version: file.version, from: held.version, schema: file.source, steps: Object.fromEntries(steps) };
  }
  return entries;
}
