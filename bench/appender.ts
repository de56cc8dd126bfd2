// A separate process that appends one line at a time, as an operator's echo would, and waits
// for the parent to say the line was delivered before it appends the next.
import { appendFileSync } from "node:fs";

const [inbox, countText, prefix = "bench:t:"] = process.argv.slice(2);
const count = Number(countText);
let sent = 0;

function next(): void {
  if (sent === count) {
    process.disconnect?.();
    return;
  }
  sent++;
  appendFileSync(inbox!, `${prefix}${process.hrtime.bigint()}\n`);
}

process.on("message", next);
next();
