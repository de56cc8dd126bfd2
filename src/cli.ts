#!/usr/bin/env node
// The \`cdp\` command (package.json's bin); what it does is in cli/. Only this file exits the process.
import { flushed, main } from "./cli/main.js";

// \`cdp status | head -1\`: the reader has what it wanted and went away; nothing to report
for (const stream of [process.stdout, process.stderr]) {
  stream.on("error", (error: NodeJS.ErrnoException) => {
    if (error.code === "EPIPE") process.exit(0);
    throw error;
  });
}
const code = await main(process.argv.slice(2));
await Promise.all([flushed(process.stdout), flushed(process.stderr)]);
process.exit(code);
