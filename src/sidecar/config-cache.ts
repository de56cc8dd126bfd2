// What GET /v1/config serves: the configuration without its secrets, one body per path, kept
// until the revision (or the schemas) change.
import type { IncomingMessage, ServerResponse } from "node:http";
import { decodePathPart, HttpError, matchesEtag } from "./http.js";
import type { Pipeline } from "../types.js";
import { withoutSecrets, type Schemas } from "../schemas/schemas.js";

/**
 * GET /v1/config[/app[/key.path]]: the configuration without its secrets; the revision is the
 * ETag. Bodies are kept per path until the revision (or the schemas) change.
 */
export class ConfigCache {
  #bodies = new Map<string, { text: string; length: string }>();
  #headers: string[] = [];
  #revision = -1;
  #schemas: Schemas | undefined;

  serve(req: IncomingMessage, res: ServerResponse, rest: string, pipeline: Pipeline): void {
    const { table, schemas } = pipeline;
    if (table.revision !== this.#revision || schemas !== this.#schemas || this.#bodies.size > 10_000) {
      this.#bodies.clear();
      this.#revision = table.revision;
      this.#schemas = schemas;
      // the shape of what is served: each app's schema version (x-cdp-version)
      const versions = [...schemas].map(([app, schema]) => `${app}=${schema.version}`).join(", ");
      this.#headers = ["etag", `"${table.revision}"`, "cache-control", "no-cache", "cdp-schema-versions", versions];
    }
    const headers = this.#headers;
    if (matchesEtag(req.headers["if-none-match"], headers[1]!)) return void res.writeHead(304, headers).end();
    let body = this.#bodies.get(rest);
    if (body === undefined) {
      const text = JSON.stringify(configAt(pipeline, rest));
      body = { text, length: String(Buffer.byteLength(text)) };
      this.#bodies.set(rest, body);
    }
    // the hot path of reads: headers as a flat list, a known length (not chunked), and a string that Node sends in one write with the headers
    res.writeHead(200, [...headers, "content-type", "application/json; charset=utf-8", "content-length", body.length]);
    res.end(req.method === "HEAD" ? undefined : body.text);
  }
}

function configAt({ table, schemas }: Pipeline, rest: string): unknown {
  if (rest === "") {
    const apps: Record<string, unknown> = {};
    for (const [app, schema] of schemas) apps[app] = withoutSecrets(schema, [], table.config(app));
    return apps;
  }
  const [app = "", key, ...more] = rest.split("/").map(decodePathPart);
  if (more.length > 0) throw new HttpError(404, `give a key as a dotted path: /v1/config/${app}/${[key, ...more].join(".")}`);
  const schema = schemas.get(app);
  if (!schema) throw new HttpError(404, `unknown app "${app}"`);
  if (key === undefined || key === "") return withoutSecrets(schema, [], table.config(app));
  const path = key.split(".");
  const info = schema.key(path);
  if (typeof info === "string") throw new HttpError(404, `${app}${info}`);
  if (info.writeOnly) throw new HttpError(403, `${app}.${key} is secret (writeOnly): it is never served`);
  const value = table.get(app, key);
  if (value === undefined) throw new HttpError(404, `${app}.${key} has no value`);
  return withoutSecrets(schema, path, value);
}
