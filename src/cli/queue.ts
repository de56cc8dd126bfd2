// Lines a command appends to the inbox (cdp push, rollback, schedule cancel), and their outcomes
// read back from the journal and cdp.rej once the running watcher has judged them.
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { openDataDir } from "../store/datadir.js";
import { lockHolder } from "../store/durable.js";
import { INBOX_FILE } from "../inbox/inbox.js";
import { awaitReceipts, awaitVerdicts, receiptMarks, type Receipt } from "../pipeline/receipts.js";
import { readWatcherInfo } from "../store/watcher.js";
import { appendToInbox, invokingUser } from "../pipeline/submit.js";
import { stderrLog, type Io } from "./commands.js";

/**
 * Append lines to the inbox with one write in append mode (concurrent writers never interleave
 * within it), each after a `# by:` (and `# reason:`) comment; then, when asked, wait for their
 * outcomes from the running watcher.
 */
export async function queueLines(
  dir: string,
  lines: string[],
  io: Io,
  options: { reason?: string; wait: boolean | "if-watching"; timeoutMs: number },
): Promise<{ receipts?: Receipt[]; watching: boolean }> {
  await openDataDir(dir, stderrLog);
  const watcher = await lockHolder(dir);
  const marks = await receiptMarks(dir);
  const said = `# by: ${invokingUser()}\n${options.reason ? `# reason: ${options.reason.replace(/[\r\n]+/g, " ")}\n` : ""}`;
  let text = `# cdp push id=${randomUUID()}\n`;
  const ends: number[] = [];
  for (const line of lines) {
    text += `${said}${line}\n`;
    ends.push(Buffer.byteLength(text));
  }
  const landed = await appendToInbox(dir, text, options.wait !== false && watcher !== undefined);
  io.stderr(`queued ${lines.length} line${lines.length === 1 ? "" : "s"} in ${join(dir, INBOX_FILE)}\n`);
  if (options.wait === false) return { watching: watcher !== undefined };
  if (watcher === undefined) {
    io.stderr(`cdp: no watcher is running on ${dir}: the lines wait in the inbox until 'cdp watch --dir ${dir}' starts\n`);
    return { watching: false };
  }
  if (!landed) return { watching: true }; // the inbox was replaced at once: their outcomes cannot be told apart
  const start = landed.end - Buffer.byteLength(text);
  const numberOf = (i: number) => landed.linesBefore + (text.slice(0, ends[i]).match(/\n/g)?.length ?? 0);
  const deadline = Date.now() + options.timeoutMs;
  const receipts = await awaitReceipts(
    dir,
    landed.file,
    lines.map((line, i) => ({ text: line, end: start + ends[i]!, number: numberOf(i) })),
    marks,
    options.timeoutMs,
  );
  // an app rendered for a service: accepted is not the end of it until the service has taken it
  const rendered = (await readWatcherInfo(dir))?.render ?? [];
  return { watching: true, receipts: await awaitVerdicts(dir, receipts, rendered, Math.max(0, deadline - Date.now())) };
}
