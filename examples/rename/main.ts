// The Webmachine hot-swap lesson, with cdp: an HTTP service whose config renames a field,
// user_id → userId, and back, while it serves. The schema file is the release: put v2's in the
// schema directory and cdp migrates the live config (JSON Patch steps, x-cdp-migrations); put
// v1's back and it goes down again with the step it recorded. The service never restarts.
import { copyFileSync, existsSync, mkdirSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { startCdp } from "../../src/index.js";

const here = fileURLToPath(new URL("../../../examples/rename/", import.meta.url)); // from dist/examples/rename
const dir = resolve(process.env.CDP_DIR ?? join(here, "data"));
const schemas = join(dir, "schemas");
mkdirSync(schemas, { recursive: true });
if (!existsSync(join(schemas, "profile.schema.json"))) copyFileSync(join(here, "v1", "profile.schema.json"), join(schemas, "profile.schema.json"));

const cdp = await startCdp({ init: true, dir, schemas, pollIntervalMs: 200 }).catch((error: Error) => {
  console.error(`cdp: ${error.message}`);
  process.exit(2);
});

// Each change says the schema version its value has: the service keeps serving one answer shape.
let version = cdp.schemaVersion("profile")!;
cdp.subscribe("profile", (event) => {
  if (event.version !== undefined && event.version !== version) console.log(`profile is now schema version ${event.version}`);
  version = event.version ?? version;
});

const server = createServer((_request, res) => {
  const profile = cdp.get("profile") as Record<string, string>;
  const userId = version >= 2 ? profile.userId : profile.user_id;
  res
    .writeHead(200, { "content-type": "application/json" })
    .end(JSON.stringify({ userId, greeting: `${profile.greeting}, ${userId}!`, schemaVersion: version }));
});
server.listen(Number(process.env.PORT ?? 8080), "127.0.0.1", () => {
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  console.log(`serving ${url}/ (the profile comes live from cdp; now ${JSON.stringify(cdp.get("profile"))})
Try, in another terminal:
  curl ${url}/
  echo 'profile:user_id:alice' >> ${join(dir, "cdp.new")}
  cp ${join(here, "v2", "profile.schema.json")} ${schemas}/     (upgrade: user_id becomes userId)
  cp ${join(here, "v1", "profile.schema.json")} ${schemas}/     (downgrade: back to user_id)
Stop with Ctrl-C.`);
});

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    server.close();
    void cdp.stop().then(() => process.exit(0));
  });
}
