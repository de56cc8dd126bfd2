// What became of the lines `cdp push` appended, read from what the watcher writes after the push:
// an accepted line is the journal record at its own inbox position (inbox=FILE@OFFSET); a rejected
// one, the cdp.rej record with its line number and its very text. A line with no record (a
// comment) is done once the watcher's position in the journal passes it.
import { open, readFile, rename, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import type { RenderVerdicts } from "../render/renderer.js";
import { JOURNAL_FILE } from "../store/journal.js";
import { REJECTS_FILE } from "../store/rejects.js";

export interface Receipt {
  text: string;
  /** "taken back": accepted, then refused by the service its config is rendered for. */
  outcome: "accepted" | "rejected" | "ignored" | "waiting" | "taken back";
  revision?: number;
  reason?: string;
  /** For "taken back": the revision that took it back. */
  takenBackAt?: number;
}

/** The journal's and cdp.rej's sizes now: a push looks only at what is written after. */
export async function receiptMarks(dir: string): Promise<{ journal: number; rejects: number }> {
  const size = (name: string) =>
    stat(join(dir, name)).then(
      (info) => info.size,
      () => 0,
    );
  return { journal: await size(JOURNAL_FILE), rejects: await size(REJECTS_FILE) };
}

/**
 * Wait until every line (its text and the offset just after it in inbox file `file`) has an
 * outcome, or `timeoutMs` passes (then the rest are "waiting").
 */
export async function awaitReceipts(
  dir: string,
  file: string,
  lines: { text: string; end: number; number: number }[],
  marks: { journal: number; rejects: number },
  timeoutMs: number,
): Promise<Receipt[]> {
  const receipts: Receipt[] = lines.map(({ text }) => ({ text, outcome: "waiting" }));
  const byEnd = new Map(lines.map((line, i) => [line.end, i]));
  const byNumber = new Map(lines.map((line, i) => [line.number, i]));
  let reached = 0; // the furthest position in `file` the watcher has recorded
  const read = { journal: marks.journal, rejects: marks.rejects, journalCarry: "", rejectsCarry: "" };
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const journal = await readOn(join(dir, JOURNAL_FILE), read.journal);
    read.journal = journal.next;
    const journalLines = (read.journalCarry + journal.text).split("\n");
    read.journalCarry = journalLines.pop()!;
    for (const [i, line] of journalLines.entries()) {
      const at = positionIn(line, file);
      if (at === undefined) continue;
      reached = Math.max(reached, at);
      const index = byEnd.get(at);
      const revision = /^# rev=(\d+) /.exec(line)?.[1];
      if (index !== undefined && revision !== undefined && !line.includes(" source=schema:") && journalLines[i + 1] !== undefined)
        receipts[index] = { text: lines[index]!.text, outcome: "accepted", revision: Number(revision) };
    }
    const rejects = await readOn(join(dir, REJECTS_FILE), read.rejects);
    read.rejects = rejects.next;
    const rejectLines = (read.rejectsCarry + rejects.text).split("\n");
    read.rejectsCarry = rejectLines.pop()!;
    // a header whose text line is not read yet waits for it
    if (rejectLines.at(-1)?.startsWith("# seq=")) read.rejectsCarry = `${rejectLines.pop()!}\n${read.rejectsCarry}`;
    for (const [i, line] of rejectLines.entries()) {
      const header = /^# seq=\d+ time=\S+ source=\S+:(\d+)( length=\d+)? reason: (.*)$/.exec(line);
      const index = header ? byNumber.get(Number(header[1])) : undefined;
      const recorded = rejectLines[i + 1];
      // a line over the length limit is recorded cut short (its length in the header)
      const same = recorded !== undefined && index !== undefined && (header![2] ? lines[index]!.text.startsWith(recorded) : recorded === lines[index]!.text);
      if (same) receipts[index] = { text: lines[index]!.text, outcome: "rejected", reason: header![3]! };
    }
    // a line the watcher has passed with neither record is a comment (a rejection is written before the journal's position)
    for (const [i, line] of lines.entries())
      if (receipts[i]!.outcome === "waiting" && line.end <= reached) receipts[i] = { text: line.text, outcome: "ignored" };
    if (receipts.every((receipt) => receipt.outcome !== "waiting") || Date.now() > deadline) return receipts;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function positionIn(line: string, file: string): number | undefined {
  if (!line.startsWith("# ")) return undefined;
  const inbox = / inbox=([^\s@]+)@(\d+)/.exec(line);
  return inbox && inbox[1] === file ? Number(inbox[2]) : undefined;
}

/** The file's text from `from` on; a file that shrank (compacted) is read from its start. */
async function readOn(path: string, from: number): Promise<{ text: string; next: number }> {
  const handle = await open(path, "r").catch(() => undefined);
  if (!handle) return { text: "", next: from };
  try {
    const { size } = await handle.stat();
    const start = size < from ? 0 : from;
    const buffer = Buffer.alloc(size - start);
    await handle.read(buffer, 0, buffer.length, start);
    return { text: buffer.toString("utf8"), next: size };
  } finally {
    await handle.close();
  }
}

/** What the render targets' services said (the watcher keeps it up to date; cdp push reads it). */
export const RENDERED_FILE = "cdp.rendered";

let writing: Promise<void> = Promise.resolve();

/** Replace cdp.rendered with the verdicts (one write at a time, the last one wins). */
export function writeRenderVerdicts(dir: string, verdicts: RenderVerdicts, log: Pick<Logger, "warn">): void {
  const text = `${JSON.stringify(verdicts)}\n`;
  const path = join(dir, RENDERED_FILE);
  writing = writing
    .then(async () => {
      await writeFile(`${path}.tmp`, text, { mode: 0o600 });
      await rename(`${path}.tmp`, path);
    })
    .catch((error: unknown) => log.warn({ err: error }, `could not write ${RENDERED_FILE}`));
}

export async function readRenderVerdicts(dir: string): Promise<RenderVerdicts | undefined> {
  return readFile(join(dir, RENDERED_FILE), "utf8").then(
    (text) => JSON.parse(text) as RenderVerdicts,
    () => undefined,
  );
}

/** The take-back of the change a line made at `revision`, if its service refused it. */
export function takenBackAt(verdicts: RenderVerdicts, line: string, revision: number): { at: number; reason: string } | undefined {
  const match = /^([A-Za-z_][A-Za-z0-9_-]*):([^:.]+)/.exec(line);
  if (!match) return undefined;
  const found = verdicts.takenBack.find((entry) => entry.app === match[1] && entry.key === match[2] && entry.revisions.includes(revision));
  return found && { at: found.at, reason: found.reason };
}

/**
 * For accepted lines of apps rendered for a service (`rendered`): wait until the service's
 * verdict covers them (or `timeoutMs` passes) and mark those it refused as taken back.
 */
export async function awaitVerdicts(dir: string, receipts: Receipt[], rendered: readonly string[], timeoutMs: number): Promise<Receipt[]> {
  const judged = receipts.filter((receipt) => receipt.outcome === "accepted" && rendered.includes(receipt.text.split(":", 1)[0]!));
  if (judged.length === 0) return receipts;
  const through = Math.max(...judged.map((receipt) => receipt.revision!));
  const deadline = Date.now() + timeoutMs;
  let verdicts = await readRenderVerdicts(dir);
  while ((verdicts?.judgedThrough ?? -1) < through && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    verdicts = await readRenderVerdicts(dir);
  }
  return receipts.map((receipt) => {
    if (!judged.includes(receipt) || !verdicts) return receipt;
    const back = takenBackAt(verdicts, receipt.text, receipt.revision!);
    return back ? { ...receipt, outcome: "taken back", takenBackAt: back.at, reason: back.reason } : receipt;
  });
}
