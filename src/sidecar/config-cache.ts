// What GET /v1/config serves: the configuration of the apps a token covers, without its secrets
// unless the token may see them, one body per path and kind of token, kept until the revision (or
// the schemas) change.
import type { IncomingMessage, ServerResponse } from "node:http";
import { decodePathPart, HttpError, matchesEtag } from "./http.js";
import type { Pipeline } from "../types.js";
import { withoutSecrets, type Schemas } from "../schemas/schemas.js";
import { appRefusal, type Grant } from "./tokens.js";

/**
 * GET /v1/config[/app[/key.path]]: the configuration of the token's apps, without its secrets
 * unless the token has `secrets`; the revision is the ETag. Bodies are kept per path until the revision (or the schemas) change.
 */
export class ConfigCache {
  #bodies = new Map<string, { text: string; headers: string[] }>();
  #headers: string[] = [];
  #revision = -1;
  #schemas: Schemas | undefined;

  serve(req: IncomingMessage, res: ServerResponse, rest: string, pipeline: Pipeline, grant: Grant): void {
    const slash = rest.indexOf("/");
    const app = slash === -1 ? rest : rest.slice(0, slash);
    const refusal = app === "" ? undefined : appRefusal(grant, [decodePathPart(app)]);
    if (refusal) throw new HttpError(403, refusal, "app");
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
    // what is served differs by the token's apps (for the whole configuration) and its secrets
    const cached = `${grant.secrets ? "secrets" : ""}|${rest === "" ? (grant.apps?.join(",") ?? "") : ""}|${rest}`;
    let body = this.#bodies.get(cached);
    if (body === undefined) {
      const text = JSON.stringify(configAt(pipeline, rest, grant));
      body = { text, headers: [...headers, "content-type", "application/json; charset=utf-8", "content-length", String(Buffer.byteLength(text))] };
      this.#bodies.set(cached, body);
    }
    // the hot path of reads: headers as a flat list made once, a known length (not chunked), and a string that Node sends in one write with the headers
    res.writeHead(200, body.headers);
    res.end(req.method === "HEAD" ? undefined : body.text);
  }
}

function configAt({ table, schemas }: Pipeline, rest: string, grant: Grant): unknown {
  const served = grant.secrets ? (_schema: unknown, _path: unknown, value: unknown) => value : withoutSecrets;
  if (rest === "") {
    const apps: Record<string, unknown> = {};
    for (const [app, schema] of schemas) if (grant.allows(app)) apps[app] = served(schema, [], table.config(app));
    return apps;
  }
  const [app = "", key, ...more] = rest.split("/").map(decodePathPart);
  if (more.length > 0) throw new HttpError(404, `give a key as a dotted path: /v1/config/${app}/${[key, ...more].join(".")}`);
  const schema = schemas.get(app);
  if (!schema) throw new HttpError(404, `unknown app "${app}"`);
  if (key === undefined || key === "") return served(schema, [], table.config(app));
  const path = key.split(".");
  const info = schema.key(path);
  if (typeof info === "string") throw new HttpError(404, `${app}${info}`);
  if (info.writeOnly && !grant.secrets) throw new HttpError(403, `${app}.${key} is secret (writeOnly): it is served only to a token with "secrets"`, "secrets");
  const value = table.get(app, key);
  if (value === undefined) throw new HttpError(404, `${app}.${key} has no value`);
  return served(schema, path, value);
}
