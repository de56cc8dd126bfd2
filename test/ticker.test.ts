// The demo as an operator meets it: start it, follow its advice, watch the pace change.
import { spawn } from "node:child_process";
import { appendFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { readText, recordLines, waitUntil, dataDir } from "./helpers.js";

const DEMO = fileURLToPath(new URL("../dist/examples/ticker/main.js", import.meta.url));

describe("the ticker demo", () => {
  it("changes pace at once on ticker:interval:1500 and runs on through rejected lines", async () => {
    const dir = await dataDir();
    const child = spawn(process.execPath, [DEMO], { env: { ...process.env, CDP_DIR: dir }, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (data: Buffer) => (output += data.toString()));
    child.stderr.on("data", (data: Buffer) => (output += data.toString()));
    const exited = new Promise((resolve) => child.on("exit", resolve));
    try {
      await waitUntil(() => output.includes("Next tick in 1000 ms!"));
      const inbox = join(dir, "cdp.new");
      expect(output).toContain(`echo 'ticker:interval:1500' >> ${inbox}`);

      await appendFile(inbox, "ticker:interval:1500\n");
      await waitUntil(() => output.includes("Next tick in 1500 ms!"));
      const changedAt = output.indexOf("Next tick in 1500 ms!");

      await appendFile(inbox, "ticker:interval:100\nbroken\n");
      await waitUntil(async () => (await recordLines(join(dir, "cdp.rej"))).length === 2);
      expect(await readText(join(dir, "cdp.rej"))).toContain("reason: ticker.interval must be > 200, got 100\nticker:interval:100\n");
      const ticksAfter = output.length;
      await waitUntil(() => output.slice(ticksAfter).includes("Next tick in 1500 ms!"));
      expect(output.slice(changedAt)).not.toContain("Next tick in 1000 ms!");
      expect(output.slice(changedAt)).not.toContain("Next tick in 100 ms!");
    } finally {
      child.kill("SIGTERM");
      await exited;
    }
  });
});
