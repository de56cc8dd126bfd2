// Which lines carry a secret value, and those lines with the value sealed (lines/sealed.ts): what
// cdp writes of a secret anywhere it keeps lines (the inbox it appends to, cdp.rej, rollouts).
import { appOfLine, parseLine } from "../lines/parse.js";
import { isSealed, type SecretsKey } from "../lines/sealed.js";
import type { AppSchema, Schemas } from "./schemas.js";

const withSecrets = new WeakMap<AppSchema, boolean>();

/** Whether the app's schema has a writeOnly key anywhere. */
function hasSecrets(schema: AppSchema): boolean {
  let known = withSecrets.get(schema);
  if (known === undefined) withSecrets.set(schema, (known = /"writeOnly":\s*true/.test(JSON.stringify(schema.source))));
  return known;
}

/**
 * The line with its value sealed when it sets a secret of a known app; a line that does not parse
 * but names an app with secrets and has a second ':' has what follows it sealed (it may be meant
 * for a secret key). Other lines, and values already sealed, are returned as they are.
 */
export function sealLine(text: string, schemas: Schemas, key: SecretsKey): string {
  const parsed = parseLine(text);
  if (parsed.kind === "change") {
    const info = schemas.get(parsed.app)?.key(parsed.path);
    const value = parsed.valueText.trim();
    if (typeof info !== "object" || !info.secret || isSealed(value)) return text;
    const head = text.endsWith(parsed.valueText) ? text.slice(0, text.length - parsed.valueText.length) : `${parsed.app}:${parsed.key}:`;
    return `${head}${key.seal(value)}`;
  }
  if (parsed.kind !== "error") return text;
  const app = appOfLine(text);
  const schema = app === undefined ? undefined : schemas.get(app);
  const second = text.indexOf(":", text.indexOf(":") + 1);
  if (!schema || !hasSecrets(schema) || second === -1) return text;
  const rest = text.slice(second + 1).trim();
  return rest === "" || isSealed(rest) ? text : `${text.slice(0, second + 1)}${key.seal(rest)}`;
}

/** The line as it may be shown: a secret key's value as [secret]. */
export function maskLine(text: string, schemas: Schemas): string {
  const parsed = parseLine(text);
  if (parsed.kind !== "change") return text;
  const info = schemas.get(parsed.app)?.key(parsed.path);
  return typeof info === "object" && info.secret ? `${parsed.app}:${parsed.key}:[secret]` : text;
}

/** Lines as they go to the inbox: each secret value sealed when there is a key. */
export function sealLines(lines: readonly string[], schemas: Schemas, key: SecretsKey | undefined): string[] {
  return key ? lines.map((line) => sealLine(line, schemas, key)) : [...lines];
}
