// Schema patterns run on RE2 (re2js, pure JS): linear time whatever the pattern, so a pattern such
// as ^(a+)+$ cannot be made to block cdp by a crafted value (ajv's security notes recommend it;
// $data patterns, taken from the config itself, go through the same engine).
import { createRequire } from "node:module";
import type { RE2JS } from "re2js";

// loaded with the first pattern: most schemas have none, and a fleet host's idle memory counts
let re2: typeof RE2JS | undefined;
const loadRe2 = () => (re2 ??= (createRequire(import.meta.url)("re2js") as typeof import("re2js")).RE2JS);

const compiledPatterns = new Map<string, RE2JS>();

/** A pattern compiled by RE2; one it cannot compile (backreferences, lookaround) is refused, named. */
export function linearRegExp(pattern: string): { test(text: string): boolean } {
  let compiled = compiledPatterns.get(pattern);
  // ajv tells compiled patterns apart by their toString()
  if (compiled) return { test: (text: string) => compiled!.matcher(text).find(), toString: () => `re2:${pattern}` } as { test(text: string): boolean };
  try {
    compiled = loadRe2().compile(pattern);
  } catch (error) {
    throw new Error(
      `the pattern ${JSON.stringify(pattern)} cannot be used: ${(error as Error).message} (cdp matches patterns in linear time with RE2, which has no backreferences or lookaround)`,
    );
  }
  if (compiledPatterns.size > 10_000) compiledPatterns.clear(); // $data patterns come from values: keep the cache bounded
  compiledPatterns.set(pattern, compiled);
  return linearRegExp(pattern);
}
linearRegExp.code = "linearRegExp";
