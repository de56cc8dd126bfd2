// What a target's file holds for an app's config: a mustache template (logic-less: sections and
// loops, nothing that runs code; {{key}} and {{key.path}} insert values verbatim, objects as
// JSON), or a format written by a real serializer (JSON, YAML by `yaml`, TOML by `smol-toml`, and
// env and Java properties lines, quoted and escaped here).
import mustache from "mustache";
import { stringify as toToml } from "smol-toml";
import { stringify as toYaml } from "yaml";
import type { RenderTarget } from "./targets.js";
import { isObject, type AppConfig } from "../lines/values.js";

const verbatim = (value: unknown) => (typeof value === "object" && value !== null ? JSON.stringify(value) : String(value));

/** The file's text; throws (with the serializer's reason) when the config cannot be written in the format. */
export function renderTarget(target: RenderTarget, config: AppConfig): string {
  if (target.template !== undefined) return mustache.render(target.template, config, {}, { escape: verbatim });
  switch (target.format) {
    case "json":
      return `${JSON.stringify(config, null, 2)}\n`;
    case "yaml":
      return toYaml(config);
    case "toml":
      return `${toToml(config)}\n`;
    case "env":
      return leaves(config)
        .map(
          ([path, value]) =>
            `${path
              .join("_")
              .toUpperCase()
              .replace(/[^A-Z0-9_]/g, "_")}=${quoteEnv(value)}\n`,
        )
        .join("");
    default:
      return leaves(config)
        .map(([path, value]) => `${escapeProperty(path.join("."), true)}=${escapeProperty(typeof value === "string" ? value : JSON.stringify(value), false)}\n`)
        .join("");
  }
}

/** Every value that is not an object, with its path (arrays are values). */
function leaves(config: AppConfig, path: string[] = []): [string[], unknown][] {
  return Object.entries(config).flatMap(([key, value]) => (isObject(value) ? leaves(value, [...path, key]) : [[[...path, key], value] as [string[], unknown]]));
}

// Double-quoted, as shells, systemd's EnvironmentFile and dotenv read it: nothing inside expands.
function quoteEnv(value: unknown): string {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return `"${text
    .replace(/[\\"$`]/g, (c) => `\\${c}`)
    .replace(/\n/g, "\\n")
    .replace(/\r/g, "\\r")}"`;
}

// java.util.Properties: backslash escapes; a key also escapes its separators.
function escapeProperty(text: string, key: boolean): string {
  let out = text
    .replace(/\\/g, "\\\\")
    .replace(/\n/g, "\\n")
    .replace(/\r/g, "\\r")
    .replace(/\t/g, "\\t")
    .replace(/[#!]/g, (c) => `\\${c}`);
  if (key) out = out.replace(/[=: ]/g, (c) => `\\${c}`);
  else out = out.replace(/^ /, "\\ ");
  return out.replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}
