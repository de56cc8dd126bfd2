// cdp as a package and a service: what `npm pack` ships, and the service files under a real
// systemd-analyze and a real supervisord (exit 3 is restarted, exit 2 is not).
import { execFile, spawn } from "node:child_process";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { afterThisTest, CLI, dataDir, tempDir, waitUntil, appendAndWait } from "./helpers.js";
import { fleetArgs, startEtcd } from "./etcd.js";

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL("..", import.meta.url));

describe("the package", () => {
  it("ships the built code, its types, the licence, the service files; no tests, no sources, no install script", async () => {
    const { stdout } = await run("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd: ROOT });
    const [pack] = JSON.parse(stdout) as [{ files: { path: string }[] }];
    const files = pack.files.map((file) => file.path);
    for (const expected of [
      "LICENSE",
      "README.md",
      "package.json",
      "dist/src/cli.js",
      "dist/src/index.js",
      "dist/src/index.d.ts",
      "dist/src/sidecar/dashboard.html",
      "examples/systemd/cdp.service",
      "examples/supervisor/cdp.conf",
    ]) {
      expect(files, expected).toContain(expected);
    }
    expect(files.filter((path) => path.startsWith("test/") || path.startsWith("src/") || path.endsWith(".tgz"))).toEqual([]);
    const manifest = JSON.parse(await readFile(join(ROOT, "package.json"), "utf8")) as Record<string, Record<string, unknown>>;
    expect(manifest.scripts).not.toHaveProperty("prepare");
    expect(manifest.scripts).toHaveProperty("prepack");
    expect(manifest).toMatchObject({ types: "./dist/src/index.d.ts", license: "MIT" });
    // a fleet talks to etcd's JSON gateway with node:http: nothing to install for it
    expect(manifest.dependencies).not.toHaveProperty("etcd3");
    expect(manifest).not.toHaveProperty("peerDependencies");
    for (const key of ["repository", "bugs", "homepage"]) expect(manifest).toHaveProperty(key);
    // source maps carry their sources: they point at nothing that is not shipped
    for (const map of files.filter((path) => path.endsWith(".js.map"))) {
      const parsed = JSON.parse(await readFile(join(ROOT, map), "utf8")) as { sources: string[]; sourcesContent?: string[] };
      expect(parsed.sourcesContent?.length, map).toBe(parsed.sources.length);
    }
  });

  it("runs a fleet host on a real etcd with cdp's own dependencies: no gRPC client, no package to add", async () => {
    // a resolver hook that finds none of the gRPC client's packages, as where they were never installed
    const work = await tempDir();
    const hook = join(work, "no-grpc.mjs");
    const resolver = `export async function resolve(specifier, context, next) {
      if (/^(etcd3|@grpc\\/)/.test(specifier)) throw Object.assign(new Error("Cannot find package " + specifier), { code: "ERR_MODULE_NOT_FOUND" });
      return next(specifier, context);
    }`;
    await writeFile(hook, `import { register } from "node:module";\nregister("data:text/javascript," + encodeURIComponent(${JSON.stringify(resolver)}));\n`);
    const etcd = await startEtcd();
    const dir = await dataDir();
    const child = spawn(process.execPath, ["--import", hook, CLI, "watch", "--dir", dir, ...fleetArgs(etcd, "/cdp/package", "a")], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout!.on("data", (data: Buffer) => (output += data.toString()));
    child.stderr!.on("data", (data: Buffer) => (output += data.toString()));
    const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
    afterThisTest(async () => {
      if (child.exitCode === null) child.kill("SIGKILL");
      await exited;
    });
    await waitUntil(() => output.includes("cdp is watching") || child.exitCode !== null);
    expect(output).toContain("caught up with the fleet");
    await appendAndWait(dir, "ticker:interval:1500\n", 1);
    expect(output).not.toMatch(/Cannot find package/);
  });

  it("the systemd unit passes systemd-analyze verify", async () => {
    const copy = join(await tempDir(), "cdp.service");
    await writeFile(copy, await readFile(join(ROOT, "examples/systemd/cdp.service")));
    const { stderr } = await run("systemd-analyze", ["verify", copy]);
    expect(stderr).toBe("");
  });

  it("under supervisord with the example's settings, exit 3 is restarted and the watcher goes on once the inbox is back", async () => {
    const dir = await dataDir();
    await mkdir(join(dir, "cdp.new")); // the inbox unavailable: cdp exits 3 after --max-outage
    const work = await tempDir();
    const example = await readFile(join(ROOT, "examples/supervisor/cdp.conf"), "utf8");
    const program = example
      .replace(/^command=.*$/m, `command=${process.execPath} ${CLI} watch --dir ${dir} --max-outage 1`)
      .replace(/^user=.*$/m, "")
      .replace(/^stdout_logfile=.*$/m, `stdout_logfile=${join(work, "cdp.log")}`);
    const conf = join(work, "supervisord.conf");
    await writeFile(
      conf,
      `[supervisord]\nnodaemon=true\nlogfile=${join(work, "supervisord.log")}\npidfile=${join(work, "supervisord.pid")}\n[unix_http_server]\nfile=${join(work, "supervisor.sock")}\n${program}`,
    );
    const supervisord = spawn("supervisord", ["-n", "-c", conf], { stdio: "ignore" });
    const exited = new Promise((resolve) => supervisord.on("exit", resolve));
    afterThisTest(async () => {
      supervisord.kill("SIGTERM");
      await exited;
    });
    const log = () => readFile(join(work, "supervisord.log"), "utf8").catch(() => "");
    await waitUntil(async () => (await log()).includes("exited: cdp (exit status 3; not expected)"));
    await rm(join(dir, "cdp.new"), { recursive: true });
    await appendAndWait(dir, "ticker:interval:1500\n", 1);
    expect((await log()).match(/spawned: 'cdp'/g)!.length).toBeGreaterThan(1);
  });
});
