// The rename example (the Webmachine hot-swap lesson): an HTTP service whose config field
// user_id becomes userId and back while it serves, without a restart.
import { spawn } from "node:child_process";
import { appendFile, copyFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { tempDir, waitUntil } from "./helpers.js";

const EXAMPLE = fileURLToPath(new URL("../dist/examples/rename/main.js", import.meta.url));
const RELEASES = fileURLToPath(new URL("../examples/rename/", import.meta.url));

describe("the rename example", () => {
  it("serves the same answer while its config is migrated up and down under it", async () => {
    const dir = await tempDir();
    const child = spawn(process.execPath, [EXAMPLE], { env: { ...process.env, CDP_DIR: dir, PORT: "0" }, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (data: Buffer) => (output += data.toString()));
    child.stderr.on("data", (data: Buffer) => (output += data.toString()));
    const exited = new Promise((resolve) => child.on("exit", resolve));
    try {
      await waitUntil(() => /serving (http:\S+)\//.test(output));
      const url = /serving (http:\S+)\//.exec(output)![1]!;
      const answer = async () => (await (await fetch(`${url}/`)).json()) as { userId: string; schemaVersion: number };
      expect(await answer()).toEqual({ userId: "guest", greeting: "Hello, guest!", schemaVersion: 1 });
      await appendFile(join(dir, "cdp.new"), "profile:user_id:alice\n");
      await waitUntil(async () => (await answer()).userId === "alice");

      await copyFile(join(RELEASES, "v2", "profile.schema.json"), join(dir, "schemas", "profile.schema.json"));
      await waitUntil(async () => (await answer()).schemaVersion === 2);
      expect(await answer()).toEqual({ userId: "alice", greeting: "Hello, alice!", schemaVersion: 2 });
      await appendFile(join(dir, "cdp.new"), "profile:userId:bob\n");
      await waitUntil(async () => (await answer()).userId === "bob");

      await copyFile(join(RELEASES, "v1", "profile.schema.json"), join(dir, "schemas", "profile.schema.json"));
      await waitUntil(async () => (await answer()).schemaVersion === 1);
      expect(await answer()).toEqual({ userId: "bob", greeting: "Hello, bob!", schemaVersion: 1 });
      expect(output).toContain("profile is now schema version 2");
      expect(output).toContain("profile is now schema version 1");
    } finally {
      child.kill("SIGTERM");
      await exited;
    }
  });
});
