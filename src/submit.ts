// Lines sent to the sidecar take the operators' path: one append to cdp.new, as `echo >>` does,
// so they are ordered, journaled and recovered like any other line. A comment line with a fresh id
// goes first, in the same write; the lines that follow it in the inbox are the caller's, and
// their outcomes are reported once their batch is durable.
import { randomUUID } from "node:crypto";
import { open } from "node:fs/promises";
import { join } from "node:path";
import { INBOX_FILE } from "./inbox.js";
import type { LineOutcome, Pipeline } from "./pipeline.js";

export interface LineResult {
  /** The line's number in what was submitted (1-based). */
  line: number;
  outcome: LineOutcome["outcome"];
  revision?: number;
  reason?: string;
}

export interface Submitted {
  /** processed: every line has its outcome; queued: they are in the inbox but were not all processed in time. */
  status: "processed" | "queued";
  lines: LineResult[];
}

/** Append `text` (complete lines) to the inbox and wait up to `waitMs` for each line's outcome. */
export async function submitLines(pipeline: Pipeline, text: string, waitMs: number, from: string): Promise<Submitted> {
  const body = text.endsWith("\n") ? text : `${text}\n`;
  const count = body.split("\n").length - 1;
  const marker = `# from ${from.replace(/\s+/g, "_")} id=${randomUUID()}`;
  const results: LineResult[] = [];
  let found = false;
  let done!: () => void;
  const complete = new Promise<void>((resolve) => (done = resolve));
  const take = (_file: string, lines: LineOutcome[]) => {
    for (const line of lines) {
      if (results.length === count) return;
      if (!found) {
        found = line.text.includes(marker);
        continue;
      }
      const { outcome, revision, reason } = line;
      results.push({ line: results.length + 1, outcome, ...(revision === undefined ? {} : { revision }), ...(reason === undefined ? {} : { reason }) });
      if (results.length === count) done();
    }
  };
  pipeline.events.on("lines", take);
  let timer: NodeJS.Timeout | undefined;
  try {
    const inbox = await open(join(pipeline.dir, INBOX_FILE), "a", 0o600);
    try {
      await inbox.write(`${marker}\n${body}`); // one write(2) in append mode: never interleaved with other writers
    } finally {
      await inbox.close();
    }
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, waitMs)));
    await Promise.race([complete, timeout]);
  } finally {
    clearTimeout(timer);
    pipeline.events.off("lines", take);
  }
  return { status: results.length === count ? "processed" : "queued", lines: results };
}
