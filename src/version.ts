// cdp's own version, from its package.json: two levels up when built (dist/src), one in a checkout run from src.
import { readFileSync } from "node:fs";

function readVersion(): string {
  for (const up of ["../package.json", "../../package.json"]) {
    try {
      const manifest = JSON.parse(readFileSync(new URL(up, import.meta.url), "utf8")) as { name?: string; version?: string };
      if (manifest.name === "cdp" && manifest.version) return manifest.version;
    } catch {
      // not there: look one level up
    }
  }
  return "unknown";
}

export const VERSION = readVersion();
