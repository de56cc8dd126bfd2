// Rendering files for a service that reads files: a real nginx from Debian (nginx-light), started
// by the test on a loopback port, reads the config cdp renders; nginx's own checker, reload and a
// health probe (curl) decide whether a change stays.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { appendFile, mkdir, readdir, rm, stat, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { freePort } from "../bench/etcd.js";
import { fleetArgs, startEtcd } from "./etcd.js";
import { startCdp } from "../src/index.js";
import { afterThisTest, capturedLogger, cdp, CLI, dataDir, getConfig, readText, runCdp, startWatch, tempDir, waitUntil } from "./helpers.js";

const web = {
  type: "object",
  additionalProperties: false,
  properties: {
    greeting: { type: "string", default: "hello" },
    healthStatus: { type: "integer", minimum: 200, maximum: 599, default: 200 },
    note: { type: "string", default: "" },
  },
};

/** A data directory for one app (`web` unless told), its schema directory beside it under `root`. */
async function webDataDir(app = "web", schema: object = web): Promise<{ root: string; schemas: string; dir: string }> {
  const root = await tempDir();
  const schemas = join(root, "schemas");
  await mkdir(schemas);
  await writeFile(join(schemas, `${app}.schema.json`), JSON.stringify(schema));
  return { root, schemas, dir: await dataDir(schemas) };
}

/** A data directory for app `web`, a render file whose target is a whole nginx config, and how to reach nginx. */
async function nginxSetUp(extra: Record<string, unknown> = {}) {
  const { root, schemas, dir } = await webDataDir();
  const port = await freePort();
  const conf = join(root, "nginx");
  await mkdir(join(conf, "temp"), { recursive: true });
  const temp = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((name) => `${name}_temp_path ${join(conf, "temp", name)};`).join(" ");
  await writeFile(
    join(root, "nginx.conf.tmpl"),
    `pid ${join(conf, "nginx.pid")};
error_log ${join(conf, "error.log")} notice;
events { worker_connections 64; }
http {
  access_log off;
  ${temp}
  server {
    listen 127.0.0.1:${port};
    location = /healthz { return {{healthStatus}} "ok\\n"; }
    location = / { default_type text/plain; return 200 "{{greeting}}\\n"; }
  }
}
`,
  );
  const dest = join(conf, "nginx.conf");
  const target = {
    app: "web",
    template: "nginx.conf.tmpl",
    dest,
    mode: "0644",
    check: ["nginx", "-t", "-q", "-c", "{staged}"],
    reload: ["nginx", "-s", "reload", "-c", "{dest}"],
    health: ["curl", "-fsS", "--max-time", "2", `http://127.0.0.1:${port}/healthz`],
    healthTimeoutMs: 2000,
    ...extra,
  };
  const render = join(root, "render.json");
  await writeFile(render, JSON.stringify({ targets: [target] }));
  const url = `http://127.0.0.1:${port}/`;
  const startNginx = () => {
    execFileSync("nginx", ["-c", dest]);
    afterThisTest(async () => {
      try {
        execFileSync("nginx", ["-s", "stop", "-c", dest], { stdio: "ignore" });
      } catch {
        // already stopped
      }
    });
  };
  const served = async (path = "") => {
    const response = await fetch(`${url}${path}`).catch(() => undefined);
    return response ? `${response.status} ${(await response.text()).trim()}` : "down";
  };
  const reloads = () => (readFileSync(join(conf, "error.log"), "utf8").match(/signal 1 \(SIGHUP\) received/g) ?? []).length;
  return { root, schemas, dir, dest, render, startNginx, served, reloads };
}

describe("render targets, with a real nginx", () => {
  it("renders at start, serves a change after the reload, and reloads nothing when the output is unchanged", async () => {
    const setUp = await nginxSetUp();
    const watch = await startWatch(setUp.dir, ["--schemas", setUp.schemas, "--render", setUp.render]);
    expect(readFileSync(setUp.dest, "utf8")).toContain('return 200 "hello\\n";'); // before "cdp is watching"
    expect((await stat(setUp.dest)).mode & 0o777).toBe(0o644);
    setUp.startNginx();
    expect(await setUp.served()).toBe("200 hello");

    await appendFile(join(setUp.dir, "cdp.new"), "web:greeting:bonjour\n");
    await waitUntil(async () => (await setUp.served()) === "200 bonjour");
    const reloads = setUp.reloads();
    const written = (await stat(setUp.dest)).mtimeMs;
    // a key the template does not use, and the same value again: the same text, so no write and no reload
    await appendFile(join(setUp.dir, "cdp.new"), "web:note:x\nweb:greeting:bonjour\n");
    await waitUntil(async () => (await readText(join(setUp.dir, "cdp"))).includes("web:note:x"));
    await waitUntil(
      async () =>
        watch
          .output()
          .split("\n")
          .filter((line) => line.includes('"rendered"')).length >= 1,
    );
    await appendFile(join(setUp.dir, "cdp.new"), "web:greeting:salut\n");
    await waitUntil(async () => (await setUp.served()) === "200 salut");
    await waitUntil(
      () =>
        watch
          .output()
          .split("\n")
          .filter((line) => line.includes('"msg":"rendered"')).length === 2,
    ); // bonjour's, salut's
    expect(setUp.reloads()).toBe(reloads + 1); // salut's reload only
    expect((await stat(setUp.dest)).mtimeMs).toBeGreaterThan(written);
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
  });

  it("never lets nginx see a change its checker refuses: the file stays, and the change is taken back with nginx's words", async () => {
    const setUp = await nginxSetUp();
    const watch = await startWatch(setUp.dir, ["--schemas", setUp.schemas, "--render", setUp.render]);
    setUp.startNginx();
    await appendFile(join(setUp.dir, "cdp.new"), "web:greeting:bonjour\n");
    await waitUntil(async () => (await setUp.served()) === "200 bonjour");
    const good = readFileSync(setUp.dest, "utf8");

    await appendFile(join(setUp.dir, "cdp.new"), 'web:greeting:a"; bogus_directive "x\n');
    await waitUntil(async () => (await readText(join(setUp.dir, "cdp"))).includes("source=render:"));
    expect(readFileSync(setUp.dest, "utf8")).toBe(good);
    expect(await setUp.served()).toBe("200 bonjour");
    expect(await getConfig(setUp.dir, "web.greeting", setUp.schemas)).toBe("bonjour");
    const history = await cdp(["history", "--dir", setUp.dir, "web.greeting"]);
    expect(history.output).toMatch(
      /render:\S+nginx\.conf\s+web\.greeting\s+"a\\"; bogus_directive \\"x" → "bonjour"\s+\(check: .*\[emerg\] .*unknown directive "bogus_directive" .* test failed \(exit 1\)\)/,
    );
    expect((await readdir(join(setUp.root, "nginx"))).filter((name) => name.includes(".cdp-"))).toEqual([]); // no staged file left
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
  });

  it("takes back a change after which nginx is unhealthy, and nginx recovers with the last good file", async () => {
    const setUp = await nginxSetUp();
    const watch = await startWatch(setUp.dir, ["--schemas", setUp.schemas, "--render", setUp.render, "--http", "127.0.0.1:0"]);
    setUp.startNginx();
    await appendFile(join(setUp.dir, "cdp.new"), "web:greeting:bonjour\n");
    await waitUntil(async () => (await setUp.served()) === "200 bonjour");

    await appendFile(join(setUp.dir, "cdp.new"), "web:healthStatus:500\n");
    await waitUntil(async () => (await readText(join(setUp.dir, "cdp"))).includes("source=render:"), 15_000);
    await waitUntil(async () => (await setUp.served("healthz")) === "200 ok");
    expect(await getConfig(setUp.dir, "web.healthStatus", setUp.schemas)).toBe(200);
    expect(await readText(join(setUp.dir, "cdp"))).toMatch(
      /reason: health: curl: \(22\) The requested URL returned error: 500 \(exit 22\)\nweb:healthStatus:200\n/,
    );
    const url = /"url":"(http:[^"]+)"/.exec(watch.output())![1]!;
    const metrics = () => fetch(`${url}/metrics`).then((response) => response.text());
    // the revert's own render probes nginx too before it counts as good
    await waitUntil(async () => (await metrics()).includes(`cdp_render_last_ok{target="${setUp.dest}"} 1`));
    expect(await metrics()).toContain(`cdp_render_failures_total{target="${setUp.dest}"} 1`);
    expect((await fetch(`${url}/readyz`)).status).toBe(200);
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
  });

  it("writes a value such as $(touch …) as text, in a template and in env format: nothing runs it", async () => {
    const setUp = await nginxSetUp();
    const marker = join(setUp.root, "pwned");
    const env = join(setUp.root, "web.env");
    await writeFile(
      setUp.render,
      JSON.stringify({
        targets: [
          { app: "web", template: "nginx.conf.tmpl", dest: setUp.dest },
          { app: "web", format: "env", dest: env, check: ["sh", "-n", "{staged}"] },
        ],
      }),
    );
    const watch = await startWatch(setUp.dir, ["--schemas", setUp.schemas, "--render", setUp.render]);
    await appendFile(join(setUp.dir, "cdp.new"), `web:greeting:$(touch ${marker}) \`touch ${marker}\`\n`);
    await waitUntil(async () => (await readText(env)).includes("touch"));
    expect(readFileSync(setUp.dest, "utf8")).toContain(`return 200 "$(touch ${marker}) \`touch ${marker}\`\\n";`);
    expect(readFileSync(env, "utf8")).toBe(`GREETING="\\$(touch ${marker}) \\\`touch ${marker}\\\`"\nHEALTHSTATUS="200"\nNOTE=""\n`);
    execFileSync("sh", ["-c", `. ${env}`]); // sourced by a shell, as services' env files are: still nothing runs
    expect(existsSync(marker)).toBe(false);
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
  });

  it("leaves the old file or the new across kill -9, never a torn one, and no staged file after a restart", async () => {
    const setUp = await nginxSetUp({ reload: undefined, health: undefined });
    for (let round = 0; round < 6; round++) {
      const watch = await startWatch(setUp.dir, ["--schemas", setUp.schemas, "--render", setUp.render]);
      await appendFile(join(setUp.dir, "cdp.new"), Array.from({ length: 20 }, (_, i) => `web:greeting:round-${round}-${i}-${"x".repeat(2000)}\n`).join(""));
      await new Promise((resolve) => setTimeout(resolve, Math.random() * 150));
      watch.child.kill("SIGKILL");
      await watch.exited;
      execFileSync("nginx", ["-t", "-q", "-c", setUp.dest]); // whole: nginx reads it
    }
    const watch = await startWatch(setUp.dir, ["--schemas", setUp.schemas, "--render", setUp.render]);
    expect((await readdir(join(setUp.root, "nginx"))).filter((name) => name.includes(".cdp-"))).toEqual([]);
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
  });

  it("refuses to start (exit 2) on a missing dest directory, an unreadable template and a template error", async () => {
    const setUp = await nginxSetUp();
    const start = async (target: Record<string, unknown>) => {
      await writeFile(setUp.render, JSON.stringify({ targets: [{ app: "web", template: "nginx.conf.tmpl", dest: setUp.dest, ...target }] }));
      const run = runCdp(["watch", "--dir", setUp.dir, "--schemas", setUp.schemas, "--render", setUp.render]);
      return { code: await run.exited, output: run.output() };
    };
    const missing = await start({ dest: join(setUp.root, "nowhere", "web.conf") });
    expect(missing.code).toBe(2);
    expect(missing.output).toContain(`--render ${setUp.render}: targets[0]: the directory of "dest" (${join(setUp.root, "nowhere")}) does not exist`);
    const unreadable = await start({ template: "absent.tmpl" });
    expect(unreadable.code).toBe(2);
    expect(unreadable.output).toContain(`cannot read the template ${join(setUp.root, "absent.tmpl")}`);
    await writeFile(join(setUp.root, "broken.tmpl"), "{{#greeting}} never closed");
    const broken = await start({ template: "broken.tmpl" });
    expect(broken.code).toBe(2);
    expect(broken.output).toContain(`the template ${join(setUp.root, "broken.tmpl")} is not valid: Unclosed section "greeting"`);
    const typo = await start({ relaod: ["nginx"] });
    expect(typo.code).toBe(2);
    expect(typo.output).toContain('unknown field "relaod"');
  });
});

/**
 * A data directory for `web` whose render target's checker holds a file whose greeting is "bad"
 * (touching `judging`) until the test creates `release`, then refuses it: a test decides when the
 * service's verdict comes, instead of racing a sleep.
 */
async function withHeldChecker() {
  const { root, schemas, dir } = await webDataDir();
  const [judging, release] = [join(root, "judging"), join(root, "release")];
  const check = [
    "sh",
    "-c",
    `if grep -q '"greeting": "bad' "$0"; then touch "$1"; while [ ! -e "$2" ]; do sleep 0.05; done; echo "refused: bad greeting" >&2; exit 1; fi`,
    "{staged}",
    judging,
    release,
  ];
  await writeFile(join(root, "render.json"), JSON.stringify({ targets: [{ app: "web", format: "json", dest: "web.json", check }] }));
  return { root, schemas, dir, judging, release };
}

describe("the shipped nginx example", () => {
  it("runs from a checkout with sandbox.sh (everything under a prefix, a free port): rendered, served, changed live", async () => {
    const prefix = await tempDir();
    const port = await freePort();
    const script = join(fileURLToPath(new URL("..", import.meta.url)), "examples", "nginx", "sandbox.sh");
    const said = execFileSync("bash", [script], {
      env: { ...process.env, PREFIX: prefix, PORT: String(port), CDP: `${process.execPath} ${CLI}` },
      encoding: "utf8",
    });
    expect(said).toContain(`nginx -c ${prefix}/conf/nginx.conf`);
    const watch = await startWatch(join(prefix, "data"), ["--schemas", join(prefix, "schemas"), "--render", join(prefix, "render.json")]);
    execFileSync("nginx", ["-c", join(prefix, "conf", "nginx.conf")]);
    afterThisTest(async () => {
      try {
        execFileSync("nginx", ["-s", "stop", "-c", join(prefix, "conf", "nginx.conf")], { stdio: "ignore" });
      } catch {
        // already stopped
      }
    });
    const hello = async () =>
      (
        await fetch(`http://127.0.0.1:${port}/hello`).then(
          (response) => response.text(),
          () => "down",
        )
      ).trim();
    await waitUntil(async () => (await hello()) === "hello");
    const pushed = await cdp(["push", "--dir", join(prefix, "data"), "web:greeting:bonjour"]);
    expect(pushed.output).toContain("web:greeting:bonjour  accepted at revision 1");
    await waitUntil(async () => (await hello()) === "bonjour"); // nginx's old workers may answer a moment longer
    expect(JSON.parse(await readText(join(prefix, "web", "config.json")))).toMatchObject({ greeting: "bonjour" });
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
  });

  it("refuses a greeting that would break out of its quoted nginx string (it served /etc/passwd), and takes ordinary text", async () => {
    const examples = join(fileURLToPath(new URL("..", import.meta.url)), "examples", "nginx");
    const injection = 'web:greeting:x"; } location /leak/ { alias /etc/; } location /y { return 200 "y';
    const lines = [injection, "web:greeting:a$b", "web:greeting:a;b", "web:greeting:Hello, world! (ünïcode ok)"];
    const { code, output } = await cdp(["check", "--schemas", examples, "-"], `${lines.join("\n")}\n`);
    expect(code).toBe(1);
    expect(output).toContain("4 change lines: 1 would be accepted, 3 rejected");
    expect(output).toMatch(/^stdin:1: web\.greeting must match pattern/m);
  });
});

describe("render targets, without a service", () => {
  it("refuses to start (exit 2) on a dest in cdp's own directories or that is a directory, and on a time no timer takes; nothing is written", async () => {
    const { root, schemas, dir } = await webDataDir();
    const render = join(root, "render.json");
    await mkdir(join(root, "site.conf"));
    await symlink(dir, join(root, "data-link"));
    const start = async (target: Record<string, unknown>) => {
      await writeFile(render, JSON.stringify({ targets: [{ app: "web", format: "json", ...target }] }));
      const run = runCdp(["watch", "--dir", dir, "--schemas", schemas, "--render", render]);
      return { code: await run.exited, output: run.output() };
    };
    const journal = await start({ dest: join(dir, "cdp") });
    expect(journal.code).toBe(2);
    expect(journal.output).toContain(`targets[0]: "dest" (${join(dir, "cdp")}) is inside cdp's own directory ${dir}`);
    const linked = await start({ dest: join(root, "data-link", "web.json") });
    expect(linked.code).toBe(2);
    expect(linked.output).toContain(`is inside cdp's own directory ${dir}`);
    const schema = await start({ dest: join(schemas, "web.schema.json") });
    expect(schema.code).toBe(2);
    expect(schema.output).toContain(`is inside cdp's own directory ${schemas}`);
    const directory = await start({ dest: join(root, "site.conf") });
    expect(directory.code).toBe(2);
    expect(directory.output).toContain(`targets[0]: "dest" (${join(root, "site.conf")}) is a directory`);
    const overflow = await start({ dest: join(root, "web.json"), commandTimeoutMs: 2 ** 31 });
    expect(overflow.code).toBe(2);
    expect(overflow.output).toContain(`"commandTimeoutMs" must be a whole number of milliseconds from 1 to 3600000 (an hour), got ${2 ** 31}`);
    for (const output of [journal.output, directory.output, overflow.output]) expect(output).not.toMatch(/at .*\.js:\d+|EISDIR/);
    expect((await readdir(root)).sort()).toEqual(["data-link", "render.json", "schemas", "site.conf"]);
    expect(await readdir(join(root, "site.conf"))).toEqual([]);
    expect(await readdir(schemas)).toEqual(["web.schema.json"]);
    expect(await readText(join(dir, "cdp"))).toBe("");
  });

  it("keeps a command's words in the reason but never a secret, control bytes or megabytes of it; /readyz names the target and stage", async () => {
    const secretWeb = { ...web, properties: { ...web.properties, token: { type: "string", writeOnly: true, default: "none-yet" } } };
    const { root, schemas, dir } = await webDataDir("web", secretWeb);
    const secret = "s3cr3t-Tok/en+42";
    // a probe that prints 3 MB of NUL bytes, the file it checks (the secret in it) and escapes, then fails
    const health = ["sh", "-c", 'head -c 3000000 /dev/zero; cat "$0"; printf "\\033[31mdown\\n"; exit 1', "{dest}"];
    await writeFile(
      join(root, "render.json"),
      JSON.stringify({ targets: [{ app: "web", format: "json", dest: "web.json", health, healthTimeoutMs: 300, healthDelayMs: 1 }] }),
    );
    const watch = await startWatch(dir, ["--schemas", schemas, "--render", join(root, "render.json"), "--http", "127.0.0.1:0"]);
    await appendFile(join(dir, "cdp.new"), `web:token:${secret}\n`);
    await waitUntil(() => watch.output().includes("is not healthy with its last good configuration either"));
    const journal = await readText(join(dir, "cdp"));
    const reasons = journal.split("\n").filter((line) => line.startsWith("#") && line.includes("reason:"));
    expect(reasons).toHaveLength(1);
    expect(reasons[0]).toMatch(/"token": "\[secret\]"/);
    expect(reasons[0]).toMatch(/down \(exit 1\)$/);
    expect(reasons[0]!.length).toBeLessThan(2300);
    expect(reasons[0]).not.toMatch(/[\u0000-\u0008\u000e-\u001f]/);
    const url = /"url":"(http:[^"]+)"/.exec(watch.output())![1]!;
    const readyz = await fetch(`${url}/readyz`);
    expect(readyz.status).toBe(503);
    expect(await readyz.json()).toEqual({ ready: false, reason: `${join(root, "web.json")}: the health failed` });
    const history = await cdp(["history", "--dir", dir, "--schemas", schemas, "--json"]);
    const served = await (await fetch(`${url}/v1/history`)).text();
    for (const text of [reasons[0]!, watch.output(), history.output, served]) {
      expect(text).not.toContain(secret);
      expect(text).not.toContain(Buffer.from(secret).toString("base64").replace(/=+$/, ""));
    }
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
  });

  it("takes back only the change the service refuses when several arrive together; cdp push and POST /v1/changes wait for the service's verdict", async () => {
    const { root, schemas, dir } = await webDataDir();
    // the service's checker refuses a file whose greeting is "bad" (the value is never part of the command)
    const check = ["sh", "-c", `if grep -q '"greeting": "bad' "$0"; then echo "refused: bad greeting" >&2; exit 1; fi`, "{staged}"];
    await writeFile(join(root, "render.json"), JSON.stringify({ targets: [{ app: "web", format: "json", dest: "web.json", check }] }));
    const watch = await startWatch(dir, ["--schemas", schemas, "--render", join(root, "render.json"), "--http", "127.0.0.1:0"]);
    const pushed = await cdp(["push", "--dir", dir, "web:greeting:bad", "web:note:kept", "web:healthStatus:204"]);
    expect(pushed.code).toBe(1);
    expect(pushed.output).toMatch(/^web:greeting:bad {2}taken back at revision 4: check: refused: bad greeting \(exit 1\)$/m);
    expect(pushed.output).toContain("web:note:kept  accepted at revision 2\n");
    expect(pushed.output).toContain("web:healthStatus:204  accepted at revision 3\n");
    expect(await getConfig(dir, "web", schemas)).toEqual({ greeting: "hello", healthStatus: 204, note: "kept" });
    expect(JSON.parse(await readText(join(root, "web.json")))).toEqual({ greeting: "hello", healthStatus: 204, note: "kept" });
    // the same over HTTP: the line's outcome is the service's verdict
    const url = /"url":"(http:[^"]+)"/.exec(watch.output())![1]!;
    const response = await fetch(`${url}/v1/changes`, {
      method: "POST",
      body: "web:note:again\nweb:greeting:bad\n",
      headers: { "content-type": "text/plain" },
    });
    expect(response.status).toBe(422);
    const body = (await response.json()) as { lines: { line: number; outcome: string; revision?: number; takenBackAt?: number; reason?: string }[] };
    expect(body.lines[0]).toMatchObject({ line: 1, outcome: "accepted", revision: 5 });
    expect(body.lines[1]).toMatchObject({ line: 2, outcome: "taken back", revision: 6, takenBackAt: 7, reason: "check: refused: bad greeting (exit 1)" });
    expect(await getConfig(dir, "web.note", schemas)).toBe("again");
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
  });

  it("keeps a change that arrives while the service judges a refused one: only the refused one is taken back", async () => {
    const { root, schemas, dir, judging, release } = await withHeldChecker();
    const watch = await startWatch(dir, ["--schemas", schemas, "--render", join(root, "render.json")]);
    const bad = runCdp(["push", "--dir", dir, "web:greeting:bad"]);
    await waitUntil(() => existsSync(judging));
    // its verdict waits for the service's on the bad one: pushed while the service judges that
    const later = runCdp(["push", "--dir", dir, "web:note:later"]);
    await waitUntil(async () => (await readText(join(dir, "cdp"))).includes("web:note:later"));
    await writeFile(release, "");
    expect(await later.exited).toBe(0);
    expect(later.output()).toContain("web:note:later  accepted at revision 2\n");
    expect(await bad.exited).toBe(1);
    expect(bad.output()).toMatch(/web:greeting:bad {2}taken back at revision 3: check: refused: bad greeting \(exit 1\)/);
    expect(await getConfig(dir, "web", schemas)).toEqual({ greeting: "hello", healthStatus: 200, note: "later" });
    await waitUntil(async () => JSON.parse(await readText(join(root, "web.json"))).note === "later");
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
  });

  it("after kill -9 while the service judged a change, takes back at start what the service refuses, with the reason", async () => {
    const { root, schemas, dir, judging, release } = await withHeldChecker();
    const args = ["--schemas", schemas, "--render", join(root, "render.json"), "--http", "127.0.0.1:0"];
    const first = await startWatch(dir, args);
    expect((await cdp(["push", "--dir", dir, "web:greeting:fine"])).output).toContain("web:greeting:fine  accepted at revision 1");
    await appendFile(join(dir, "cdp.new"), "web:greeting:bad\n");
    await waitUntil(() => existsSync(judging));
    first.child.kill("SIGKILL");
    await first.exited;
    expect(await getConfig(dir, "web.greeting", schemas)).toBe("bad"); // journaled before the service judged it
    await writeFile(release, ""); // the service refuses it as soon as it is asked again
    const second = await startWatch(dir, args);
    await waitUntil(async () => (await readText(join(dir, "cdp"))).includes("source=render:"));
    expect(await readText(join(dir, "cdp"))).toMatch(/source=render:\S+ reason: check: refused: bad greeting \(exit 1\)\nweb:greeting:fine\n/);
    expect(await getConfig(dir, "web.greeting", schemas)).toBe("fine");
    expect(JSON.parse(await readText(join(root, "web.json")))).toMatchObject({ greeting: "fine" });
    const url = /"url":"(http:[^"]+)"/.exec(second.output())![1]!;
    await waitUntil(async () => (await fetch(`${url}/readyz`)).status === 200);
    expect(((await (await fetch(`${url}/v1/config/web`)).json()) as { greeting: string }).greeting).toBe("fine");
    second.child.kill("SIGTERM");
    expect(await second.exited).toBe(0);
  });

  it("says ready again once an unhealthy service recovers, without waiting for a change", async () => {
    const { root, schemas, dir } = await webDataDir();
    const down = join(root, "service-down");
    const health = ["sh", "-c", 'test ! -e "$0"', down];
    await writeFile(
      join(root, "render.json"),
      JSON.stringify({ targets: [{ app: "web", format: "json", dest: "web.json", health, healthTimeoutMs: 300, healthDelayMs: 1 }] }),
    );
    const watch = await startWatch(dir, ["--schemas", schemas, "--render", join(root, "render.json"), "--http", "127.0.0.1:0"]);
    const url = /"url":"(http:[^"]+)"/.exec(watch.output())![1]!;
    const ready = async () => (await fetch(`${url}/readyz`)).status;
    await writeFile(down, "");
    await appendFile(join(dir, "cdp.new"), "web:greeting:bonjour\n");
    await waitUntil(() => watch.output().includes("is not healthy with its last good configuration either"));
    expect(await ready()).toBe(503);
    await rm(down);
    await waitUntil(async () => (await ready()) === 200, 15_000);
    expect(watch.output()).toContain("the service takes its file again");
    // and it renders the next change as ever
    await appendFile(join(dir, "cdp.new"), "web:greeting:salut\n");
    await waitUntil(async () => (await readText(join(root, "web.json"))).includes("salut"));
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
  });

  it("ends a command that times out with all it started (its process group)", async () => {
    const { root, schemas, dir } = await webDataDir();
    const marker = `${process.pid}${Date.now() % 100000}`; // a sleep no other test starts
    // the shell waits for its sleep (a child of its own) when the file says bonjour
    const check = ["sh", "-c", `grep -q bonjour "$0" && sleep ${marker}; echo checked`, "{staged}"];
    await writeFile(join(root, "render.json"), JSON.stringify({ targets: [{ app: "web", format: "json", dest: "web.json", check, commandTimeoutMs: 500 }] }));
    const watch = await startWatch(dir, ["--schemas", schemas, "--render", join(root, "render.json")]);
    await appendFile(join(dir, "cdp.new"), "web:greeting:bonjour\n");
    await waitUntil(async () => (await readText(join(dir, "cdp"))).includes("source=render:"));
    expect(await readText(join(dir, "cdp"))).toContain("reason: check: timed out after 500 ms\nweb:greeting:hello\n");
    expect(await readText(join(root, "web.json"))).toContain('"hello"');
    const sleeping = () =>
      execFileSync("ps", ["-eo", "args"], { encoding: "utf8" })
        .split("\n")
        .filter((line) => line.trim() === `sleep ${marker}`);
    await waitUntil(() => sleeping().length === 0, 5000);
    expect(sleeping()).toEqual([]);
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
  });

  it("writes each format with a real serializer that reads it back", async () => {
    const app = {
      type: "object",
      properties: {
        name: { type: "string", default: 'a "quoted" = value' },
        limits: { type: "object", default: { max: 5, tags: ["x", "y"] } },
        ratio: { type: "number", default: 0.5 },
      },
    };
    const { root, schemas, dir } = await webDataDir("svc", app);
    const formats = ["json", "yaml", "toml", "env", "properties"];
    await writeFile(join(root, "render.json"), JSON.stringify({ targets: formats.map((format) => ({ app: "svc", format, dest: `out.${format}` })) }));
    const watch = await startWatch(dir, ["--schemas", schemas, "--render", join(root, "render.json")]);
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
    const config = { name: 'a "quoted" = value', limits: { max: 5, tags: ["x", "y"] }, ratio: 0.5 };
    const read = (format: string) => readFileSync(join(root, `out.${format}`), "utf8");
    expect(JSON.parse(read("json"))).toEqual(config);
    expect((await import("yaml")).parse(read("yaml"))).toEqual(config);
    expect((await import("smol-toml")).parse(read("toml"))).toEqual(config);
    expect(read("env")).toBe('NAME="a \\"quoted\\" = value"\nLIMITS_MAX="5"\nLIMITS_TAGS="[\\"x\\",\\"y\\"]"\nRATIO="0.5"\n');
    expect(read("properties")).toBe('name=a "quoted" = value\nlimits.max=5\nlimits.tags=["x","y"]\nratio=0.5\n');
  });

  it("takes a change back once when the service stays unhealthy, and leaves the revert as it is (no flapping)", async () => {
    const { root, schemas, dir } = await webDataDir();
    await writeFile(
      join(root, "render.json"),
      JSON.stringify({ targets: [{ app: "web", format: "json", dest: "web.json", health: ["false"], healthTimeoutMs: 300, healthDelayMs: 1 }] }),
    );
    const watch = await startWatch(dir, ["--schemas", schemas, "--render", join(root, "render.json")]);
    await appendFile(join(dir, "cdp.new"), "web:greeting:bonjour\n");
    await waitUntil(() => watch.output().includes("is not healthy with its last good configuration either"));
    expect(JSON.parse(readFileSync(join(root, "web.json"), "utf8"))).toMatchObject({ greeting: "hello" }); // the last good file
    const journal = await readText(join(dir, "cdp"));
    expect(journal.match(/source=render:/g)).toHaveLength(1);
    expect(journal).toContain("reason: health: exit 1\nweb:greeting:hello\n");
    expect(await getConfig(dir, "web.greeting", schemas)).toBe("hello");
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
  });

  it("in a fleet, a host whose service refuses a change keeps its last good file: a local decision, the fleet's config stays", async () => {
    const { endpoints } = await startEtcd();
    const { schemas } = await webDataDir();
    const hosts = await Promise.all(
      ["a", "b"].map(async (name) => {
        const dir = await dataDir(schemas);
        const service = await tempDir(); // the service's own directory: never cdp's
        const render = join(service, "render.json");
        // the service is unhealthy whenever its file says "bad" (the value is never part of the command)
        await writeFile(
          render,
          JSON.stringify({
            targets: [
              { app: "web", format: "json", dest: "web.json", health: ["sh", "-c", '! grep -q bad "$0"', "{dest}"], healthTimeoutMs: 300, healthDelayMs: 1 },
            ],
          }),
        );
        return {
          dir,
          file: join(service, "web.json"),
          watch: await startWatch(dir, ["--schemas", schemas, "--render", render, ...fleetArgs({ endpoints }, "/cdp/render", name)]),
        };
      }),
    );
    await appendFile(join(hosts[0]!.dir, "cdp.new"), "web:greeting:fine\n");
    for (const host of hosts) await waitUntil(async () => (await readText(host.file)).includes("fine"));
    await appendFile(join(hosts[0]!.dir, "cdp.new"), "web:greeting:bad\n");
    for (const host of hosts) {
      await waitUntil(() => host.watch.output().includes("put the last good file back"));
      expect(JSON.parse(readFileSync(host.file, "utf8"))).toMatchObject({ greeting: "fine" });
      expect(await getConfig(host.dir, "web.greeting", schemas)).toBe("bad"); // the fleet's, not taken back
      expect(await readText(join(host.dir, "cdp"))).not.toContain("source=render:");
      host.watch.child.kill("SIGTERM");
      expect(await host.watch.exited).toBe(0);
    }
  });

  it("renders from the library (render: [files]) with the mode and owner given, names resolved by the system", async () => {
    const { root, schemas, dir } = await webDataDir();
    const render = join(root, "render.json");
    await writeFile(render, JSON.stringify({ targets: [{ app: "web", format: "yaml", dest: "web.yaml", mode: "0640", owner: "nobody:nogroup" }] }));
    const live = await startCdp({ dir, schemas, render: [render], logger: capturedLogger().logger });
    try {
      const info = await stat(join(root, "web.yaml"));
      expect({ mode: info.mode & 0o777, uid: info.uid, gid: info.gid }).toEqual({
        mode: 0o640,
        uid: Number(execFileSync("id", ["-u", "nobody"], { encoding: "utf8" })),
        gid: Number(execFileSync("getent", ["group", "nogroup"], { encoding: "utf8" }).split(":")[2]),
      });
      expect(readFileSync(join(root, "web.yaml"), "utf8")).toBe('greeting: hello\nhealthStatus: 200\nnote: ""\n');
    } finally {
      await live.stop();
    }
    await writeFile(render, JSON.stringify({ targets: [{ app: "web", format: "yaml", dest: "web.yaml", owner: "no-such-user-here" }] }));
    await expect(startCdp({ dir, schemas, render: [render], logger: capturedLogger().logger })).rejects.toThrow(
      `--render ${render}: targets[0]: "owner": no user "no-such-user-here" on this system`,
    );
  });

  it("takes a change back when the reload fails, with the command's words, and keeps running", async () => {
    const { root, schemas, dir } = await webDataDir();
    // the service's reload refuses a file that says "bad" (the value is never part of the command)
    const reload = ["sh", "-c", 'if grep -q bad "$0"; then echo "reload refused: bad greeting" >&2; exit 3; fi', "{dest}"];
    await writeFile(join(root, "render.json"), JSON.stringify({ targets: [{ app: "web", format: "json", dest: "web.json", reload }] }));
    const watch = await startWatch(dir, ["--schemas", schemas, "--render", join(root, "render.json")]);
    await appendFile(join(dir, "cdp.new"), "web:greeting:fine\n");
    await waitUntil(async () => (await readText(join(root, "web.json"))).includes("fine"));
    await appendFile(join(dir, "cdp.new"), "web:greeting:bad\n");
    await waitUntil(async () => (await readText(join(dir, "cdp"))).includes("source=render:"));
    expect(await readText(join(dir, "cdp"))).toContain("reason: reload: reload refused: bad greeting (exit 3)\nweb:greeting:fine\n");
    await waitUntil(async () => (await readText(join(root, "web.json"))).includes("fine")); // the last good file again
    // cdp goes on: the next change is taken
    await appendFile(join(dir, "cdp.new"), "web:greeting:fine-again\n");
    await waitUntil(async () => (await readText(join(root, "web.json"))).includes("fine-again"));
    expect(await getConfig(dir, "web.greeting", schemas)).toBe("fine-again");
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
  });
});
