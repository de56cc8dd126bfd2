// A separate process that appends one line at a time, as an operator's echo would, and waits
// for the parent to say the line was delivered before it appends the next (GAP_MS later, if given).
// Each line carries the monotonic time of its append. argv: INBOX COUNT [PREFIX] [GAP_MS]
import { appendFileSync } from "node:fs";

const [inbox, countText, prefix = "bench:t:", gapText = "0"] = process.argv.slice(2);
const count = Number(countText);
const gap = Number(gapText);
let sent = 0;

function next(): void {
  if (sent === count) {
    process.disconnect?.();
    return;
  }
  sent++;
  appendFileSync(inbox!, `${prefix}${process.hrtime.bigint()}\n`);
}

process.on("message", () => (gap > 0 ? setTimeout(next, gap) : next()));
next();
