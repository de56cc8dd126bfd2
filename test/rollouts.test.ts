// Staged fleet rollouts on a real etcd: a change baked on canary hosts, then promoted to every
// host or aborted (the canaries take the values back), each step a fleet revision.
import { appendFile, cp, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { startCdp } from "../src/index.js";
import { fleetArgs, leaderOf, startEtcd, startFleetHost } from "./etcd.js";
import {
  afterThisTest,
  capturedLogger,
  cdp,
  FLEET_TIMEOUT,
  getConfig,
  openEvents,
  readText,
  runCdp,
  SCHEMAS,
  startWatch,
  tempDir,
  waitUntil,
} from "./helpers.js";

async function fleetOf(names: string[], extra: (name: string) => string[] = () => [], members = 1) {
  const etcd = await startEtcd(members);
  const hosts: Awaited<ReturnType<typeof startFleetHost>>[] = [];
  for (const name of names) hosts.push(await startFleetHost(etcd, name, { prefix: "/cdp/rollouts", extra: extra(name) }));
  // every host says how it is before a rollout names it
  await waitUntil(async () => (await hostsSeen(hosts[0]!.dir)) === names.length);
  return { hosts, endpoints: etcd.endpoints, etcd };
}

/** How many hosts a data directory's watcher sees (from the hosts list its status reads). */
async function hostsSeen(dir: string): Promise<number> {
  const url = /"url":\s*"(http:[^"]+)"/.exec(await readText(join(dir, "cdp.watcher")))?.[1];
  if (!url) return 0;
  return ((await (await fetch(`${url}/v1/hosts`)).json()) as unknown[]).length;
}

/** Every host serves a sidecar: its /v1/hosts says which hosts the fleet sees. */
const withHttp = () => ["--http", "127.0.0.1:0"];
const interval = async (dir: string) => (await getConfig(dir, "ticker.interval")) as number;
const rollouts = async (dir: string) =>
  JSON.parse((await cdp(["rollout", "status", "--dir", dir, "--json"])).output) as { id: string; state: string; reason?: string; hosts: string[] }[];

describe("cdp rollout on a fleet of three hosts", { timeout: FLEET_TIMEOUT }, () => {
  it("stages a change on the canary only while it bakes, then promotes it to every host (--wait: exit 0)", async () => {
    const { hosts } = await fleetOf(["a", "b", "c"], withHttp);
    const [a, b, c] = hosts;
    const started = runCdp([
      "rollout",
      "start",
      "--dir",
      a!.dir,
      "--hosts",
      "b",
      "--bake",
      "10",
      "--wait",
      "--reason",
      "slower ticks save power",
      "ticker:interval:1500",
    ]);
    await waitUntil(async () => (await interval(b!.dir)) === 1500);
    // baking: the canary has it, the others do not; a change to the app is refused meanwhile
    expect(await interval(a!.dir)).toBe(1000);
    expect(await interval(c!.dir)).toBe(1000);
    const during = await rollouts(c!.dir);
    expect(during[0]).toMatchObject({ state: "baking", hosts: ["b"] });
    expect((await cdp(["status", "--dir", a!.dir, "--schemas", SCHEMAS])).output).toMatch(
      new RegExp(`^rollouts +${during[0]!.id} of ticker baking on b until \\S+ \\(cdp rollout status\\)$`, "m"),
    );
    expect((await cdp(["rollout", "status", "--dir", c!.dir])).output).toMatch(
      new RegExp(`^${during[0]!.id}  ticker  baking on b: \\d+ s left \\(until \\S+\\)  ticker\\.interval  \\(why: slower ticks save power\\)$`, "m"),
    );
    const push = await cdp(["push", "--dir", c!.dir, "ticker:interval:1700"]);
    expect(push.code).toBe(1);
    expect(push.output).toContain(`is in rollout ${during[0]!.id}`);
    expect(await cdp(["history", "--dir", b!.dir, "ticker.interval"]).then((r) => r.output)).toMatch(
      new RegExp(`staged by rollout ${during[0]!.id} on b, baking until \\S+: slower ticks save power`),
    );
    expect(await started.exited).toBe(0);
    expect(started.output()).toContain("promoted");
    for (const host of hosts) await waitUntil(async () => (await interval(host.dir)) === 1500);
    // every host's journal gives the same revision
    const states = await Promise.all(hosts.map(async (host) => (await rollouts(host.dir))[0]));
    for (const state of states)
      expect(state).toMatchObject({ id: during[0]!.id, state: "promoted", why: "slower ticks save power", reason: "the bake ended with no veto" });
    expect(await cdp(["history", "--dir", c!.dir, "ticker.interval"]).then((r) => r.output)).toContain(
      `rollout ${during[0]!.id} the bake ended with no veto: slower ticks save power`,
    );
  });

  it("takes a temporary rollout (--for) back on every host once its time after the promotion is up", async () => {
    const { hosts } = await fleetOf(["a", "b"], withHttp);
    const [a, b] = hosts;
    const started = await cdp([
      "rollout",
      "start",
      "--dir",
      a!.dir,
      "--hosts",
      "b",
      "--bake",
      "2",
      "--for",
      "10s",
      "--wait",
      "--reason",
      "load test",
      "ticker:interval:1500",
    ]);
    expect(started.code, started.output).toBe(0);
    for (const host of hosts) await waitUntil(async () => (await interval(host.dir)) === 1500);
    const due = JSON.parse((await cdp(["schedule", "--dir", b!.dir, "--json"])).output) as { id: string; kind: string; restores: string[] }[];
    const id = (await rollouts(a!.dir))[0]!.id;
    expect(due).toEqual([expect.objectContaining({ id: `${id}-end`, kind: "expiry", restores: ["ticker:interval:1000"] })]);
    for (const host of hosts) await waitUntil(async () => (await interval(host.dir)) === 1000, 30_000, `${host.name} took it back`);
    const history = JSON.parse((await cdp(["history", "--dir", a!.dir, "ticker.interval", "--json"])).output) as Record<string, unknown>[];
    expect(history[0]).toMatchObject({ value: 1000, previous: 1500, scheduled: `${id}-end`, reason: `the end of "load test" (${id}-end): put back as it was` });
  });

  it("brings a host whose schemas refused the key's last value back in line when a rollout's value is promoted", async () => {
    // host b still runs a schema where the interval may not exceed 5000
    const oldSchemas = await tempDir();
    await cp(SCHEMAS, oldSchemas, { recursive: true });
    const schema = JSON.parse(await readFile(join(oldSchemas, "ticker.schema.json"), "utf8")) as { properties: { interval: Record<string, unknown> } };
    schema.properties.interval.exclusiveMaximum = 5000;
    await writeFile(join(oldSchemas, "ticker.schema.json"), JSON.stringify(schema));
    const { hosts } = await fleetOf(["a", "b"], (name) => [...withHttp(), ...(name === "b" ? ["--schemas", oldSchemas] : [])]);
    const [a, b] = hosts;
    const readyz = async () => (await fetch(`${/"url":\s*"(http:[^"]+)"/.exec(await readText(join(b!.dir, "cdp.watcher")))![1]}/readyz`)).json();
    await writeFile(join(a!.dir, "cdp.new"), "ticker:interval:6000\n");
    await waitUntil(async () => ((await readyz()) as { ready: boolean }).ready === false);
    expect(await readyz()).toEqual({ ready: false, reason: "this host's schemas refuse fleet changes to ticker.interval" });

    const started = await cdp(["rollout", "start", "--dir", a!.dir, "--hosts", "a", "--bake", "1", "--wait", "ticker:interval:4000"]);
    expect(started.code).toBe(0);
    await waitUntil(async () => (await getConfig(b!.dir, "ticker.interval", oldSchemas)) === 4000);
    await waitUntil(async () => ((await readyz()) as { ready: boolean }).ready);
    expect(await readyz()).toMatchObject({ ready: true });
  });

  it("aborts from any host: the canaries take the value back, the others never apply it, and the starting host's cdp.rej says why (--wait: exit 1)", async () => {
    const { hosts } = await fleetOf(["a", "b", "c"], withHttp);
    const [a, b, c] = hosts;
    const started = runCdp(["rollout", "start", "--dir", a!.dir, "--hosts", "b,c", "--bake", "30", "--wait", "ticker:interval:1500"]);
    await waitUntil(async () => (await interval(b!.dir)) === 1500 && (await interval(c!.dir)) === 1500);
    const abort = await cdp(["rollout", "abort", "--dir", c!.dir, "--reason", "error rate up"]);
    expect(abort.code).toBe(0);
    expect(await started.exited).toBe(1);
    expect(started.output()).toContain("error rate up");
    for (const host of [b!, c!]) await waitUntil(async () => (await interval(host.dir)) === 1000);
    expect(await interval(a!.dir)).toBe(1000);
    const rej = await readText(join(a!.dir, "cdp.rej"));
    expect(rej).toMatch(/reason: rollout r-\S+ aborted by \S+ on c: error rate up\nticker:interval:1500\n/);
    // the starting host applied nothing, and its history says so, with why
    const history = (await cdp(["history", "--dir", a!.dir, "--schemas", SCHEMAS, "ticker"])).output;
    expect(history).toMatch(
      /ticker +rollout r-\S+ aborted, nothing changed here {2}\(rollout r-\S+ aborted by \S+ on c: error rate up \(never applied here\)\)/,
    );
    expect(history).toMatch(/ticker +rollout r-\S+ staged, nothing changed here/);
    expect(await readText(join(b!.dir, "cdp.rej"))).toBe("");
    // the app takes changes again
    expect((await cdp(["push", "--dir", a!.dir, "ticker:interval:1800"])).code).toBe(0);
    for (const host of hosts) await waitUntil(async () => (await interval(host.dir)) === 1800);
  });

  it("refuses what cannot be rolled out, saying why: an unknown or unready canary, a bad line, a second rollout of the app, one too large for etcd", async () => {
    // beside the usual apps, one whose map takes keys one by one
    const schemas = await tempDir();
    await cp(SCHEMAS, schemas, { recursive: true });
    await writeFile(
      join(schemas, "big.schema.json"),
      JSON.stringify({ type: "object", properties: { map: { type: "object", additionalProperties: { type: "string" }, default: {} } } }),
    );
    const { hosts } = await fleetOf(["a", "b"], () => [...withHttp(), "--schemas", schemas]);
    const [a] = hosts;
    const start = (...args: string[]) => cdp(["rollout", "start", "--dir", a!.dir, ...args]);
    let result = await start("--hosts", "z", "--bake", "5", "ticker:interval:1500");
    expect(result).toMatchObject({ code: 1, output: expect.stringContaining("no host named z in the fleet (its hosts: a, b)") });
    result = await start("--hosts", "b", "--bake", "5", "ticker:interval:100");
    expect(result).toMatchObject({ code: 1, output: expect.stringContaining("ticker.interval must be > 200, got 100") });
    result = await start("--hosts", "b", "--bake", "5", "ticker:ratio:0.5");
    expect(result).toMatchObject({ code: 1, output: expect.stringContaining("ticker.ratio has no value yet") });
    result = await start("--hosts", "b", "--bake", "5", "ticker:interval:1500", "db:pool.max:5");
    expect(result).toMatchObject({ code: 1, output: expect.stringContaining("a rollout changes one app") });
    result = await start("--hosts", "b", "ticker:interval:1500");
    expect(result).toMatchObject({ code: 2, output: expect.stringContaining("--hosts needs --bake SECONDS") });
    // refused by the command itself, before anything reaches the inbox
    result = await start("--hosts", "b", "--bake", "1e12", "ticker:interval:1500");
    expect(result).toMatchObject({
      code: 2,
      output: expect.stringContaining('--bake must be a positive number of seconds up to 2592000 (30 days), got "1e12"'),
    });
    result = await start("--steps", "10,50", "--every", "5", "ticker:interval:1500");
    expect(result).toMatchObject({ code: 2, output: expect.stringContaining("end with 100") });
    // a key of 900 kB: what a rollout would put back on an abort does not fit one etcd request
    await appendFile(join(a!.dir, "cdp.new"), Array.from({ length: 15 }, (_, i) => `big:map.k${i}:${"x".repeat(60_000)}\n`).join(""));
    await waitUntil(async () => Object.keys((await getConfig(a!.dir, "big.map", schemas).catch(() => ({}))) as object).length === 15);
    result = await start("--hosts", "b", "--bake", "5", "big:map.z:1");
    expect(result).toMatchObject({ code: 1, output: expect.stringContaining("too large to roll out") });
    const first = await start("--hosts", "b", "--bake", "30", "ticker:interval:1500");
    expect(first.code).toBe(0);
    const id = first.output.split("\n")[0]!;
    result = await start("--hosts", "b", "--bake", "5", "ticker:interval:1600");
    expect(result).toMatchObject({ code: 1, output: expect.stringContaining(`ticker is in rollout ${id}`) });
    // another app is free meanwhile; the refused requests are in cdp.rej with their reasons
    expect((await cdp(["push", "--dir", a!.dir, "db:pool.max:5"])).code).toBe(0);
    expect((await readText(join(a!.dir, "cdp.rej"))).match(/^# rollout: /gm)).toHaveLength(6);
    expect((await cdp(["rollout", "promote", "--dir", hosts[1]!.dir])).code).toBe(0);
    for (const host of hosts) await waitUntil(async () => (await getConfig(host.dir, "ticker.interval", schemas)) === 1500);
    expect((await cdp(["rollout", "--help"])).output).toContain(
      "Usage: cdp rollout start --dir D (--hosts H1[,H2…] --bake SECONDS | --steps 10,50,100 --every SECONDS)",
    );
    expect(await cdp(["rollout", "frobnicate", "--dir", a!.dir])).toMatchObject({
      code: 2,
      output: expect.stringContaining('unknown rollout action "frobnicate"'),
    });
    // a single host has no rollouts
    const single = await tempDir();
    await startWatch(single);
    expect(await cdp(["rollout", "start", "--dir", single, "--hosts", "a", "--bake", "5", "ticker:interval:1500"])).toMatchObject({
      code: 2,
      output: expect.stringContaining("rollouts are for a fleet"),
    });
  });

  it("aborts when a subscriber on a canary vetoes the change (the embedded library)", async () => {
    const { hosts, endpoints } = await fleetOf(["a", "c"], withHttp);
    const dir = await tempDir();
    const { logger } = capturedLogger();
    const canary = await startCdp({ init: true, dir, schemas: SCHEMAS, logger, cluster: { endpoints, prefix: "/cdp/rollouts", host: "b" } });
    afterThisTest(() => canary.stop());
    const heard: number[] = [];
    canary.subscribe("ticker", "interval", (event) => {
      heard.push(event.value as number);
      if (event.value === 1500) setTimeout(() => expect(event.veto("p99 latency doubled")).toBe(true), 50);
    });
    await waitUntil(async () => (await hostsSeen(hosts[0]!.dir)) === 3);
    const started = await cdp(["rollout", "start", "--dir", hosts[0]!.dir, "--hosts", "b", "--bake", "30", "--wait", "ticker:interval:1500"]);
    expect(started.code).toBe(1);
    expect(started.output).toContain("canary b vetoed it: p99 latency doubled");
    await waitUntil(() => heard.length === 2);
    expect(heard).toEqual([1500, 1000]);
    expect(canary.get("ticker", "interval")).toBe(1000);
    expect(canary.rollouts()[0]).toMatchObject({ state: "aborted", reason: "canary b vetoed it: p99 latency doubled" });
    expect(await interval(hosts[1]!.dir)).toBe(1000);
    expect(await readText(join(hosts[0]!.dir, "cdp.rej"))).toContain("reason: rollout r-");
  });

  it("aborts when a canary's render target refuses the change (its check fails): the canary is not ready", async () => {
    const renderDir = await tempDir();
    const render = join(renderDir, "render.json");
    // the service's checker on the canary refuses any file that asks for a 1500 ms interval
    await writeFile(
      render,
      JSON.stringify({
        targets: [
          {
            app: "ticker",
            format: "json",
            dest: join(renderDir, "ticker.json"),
            check: ["sh", "-c", '! grep -q \'"interval": 1500\' "$1"', "check", "{staged}"],
          },
        ],
      }),
    );
    const { hosts } = await fleetOf(["a", "b"], (name) => [...withHttp(), ...(name === "b" ? ["--render", render] : [])]);
    const started = await cdp(["rollout", "start", "--dir", hosts[0]!.dir, "--hosts", "b", "--bake", "60", "--wait", "ticker:interval:1500"]);
    expect(started.code).toBe(1);
    expect(started.output).toMatch(/canary b is not ready: \S+ticker\.json: the check failed/);
    await waitUntil(async () => (await interval(hosts[1]!.dir)) === 1000);
    expect(JSON.parse(await readText(join(renderDir, "ticker.json")))).toMatchObject({ interval: 1000 });
  });

  it("rolls out in steps (--steps 30,60,100 --every): one host, then two, then all", async () => {
    const { hosts } = await fleetOf(["a", "b", "c"], withHttp);
    const started = runCdp(["rollout", "start", "--dir", hosts[2]!.dir, "--steps", "30,60,100", "--every", "5", "--wait", "ticker:interval:1500"]);
    const seen = async () => (await Promise.all(hosts.map(async (host) => ((await interval(host.dir)) === 1500 ? host.name : "")))).join("");
    await waitUntil(async () => (await seen()) === "abc");
    expect(await started.exited).toBe(0);
    // each step lasts 5 s, too short to watch under load: host c's journal records them in order
    const journal = await readText(join(hosts[2]!.dir, "cdp"));
    expect(journal).toMatch(
      /marker=rollout:(\S+):staged:ticker reason: rollout \1 staged on a, baking until \S+; not applied on c\n.*marker=rollout:\1:widened:ticker reason: rollout \1 widened on a,b, baking until \S+; not applied on c\n.*reason: rollout \1 the bake ended with no veto\nticker:interval:1500\n$/,
    );
    expect(await rollouts(hosts[2]!.dir)).toMatchObject([{ state: "promoted", hosts: ["a", "b"], step: 1 }]);
  });

  it("serves rollouts over HTTP: POST /v1/rollouts starts and ends one, GET lists them, the stream tells each step", async () => {
    const { hosts } = await fleetOf(["a", "b"], withHttp);
    const url = /"url":\s*"(http:[^"]+)"/.exec(await readText(join(hosts[0]!.dir, "cdp.watcher")))![1]!;
    const events = openEvents(`${url}/v1/events`);
    const post = (body: object) => fetch(`${url}/v1/rollouts`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    const refused = await post({ hosts: ["b"], bake: 30, lines: ["ticker:interval:100"] });
    expect(refused.status).toBe(409);
    expect(((await refused.json()) as { error: string }).error).toContain("must be > 200");
    // a secret key's value is rolled out too, and shown nowhere: not in status --json nor in cdp.rollouts
    await appendFile(join(hosts[0]!.dir, "cdp.new"), "ticker:token:first-secret-1\n");
    for (const host of hosts) await waitUntil(async () => (await readText(join(host.dir, "cdp"))).includes("ticker:token:"));
    const started = await post({ hosts: ["b"], bake: 30, lines: ["ticker:interval:1500", "ticker:token:rolled-secret-2"] });
    expect(started.status).toBe(201);
    const rollout = (await started.json()) as { id: string; state: string; hosts: string[] };
    expect(rollout).toMatchObject({ state: "baking", hosts: ["b"] });
    for (const host of hosts) {
      await waitUntil(async () => (await readText(join(host.dir, "cdp.rollouts"))).includes(rollout.id));
      const shown = [(await cdp(["rollout", "status", "--dir", host.dir, "--json"])).output, await readText(join(host.dir, "cdp.rollouts"))];
      for (const text of shown) expect(text).not.toMatch(/first-secret-1|rolled-secret-2/);
      expect(shown[0]).toContain("ticker:token:[secret]");
    }
    expect(((await (await fetch(`${url}/v1/rollouts`)).json()) as { id: string }[])[0]).toMatchObject({ id: rollout.id, state: "baking" });
    const promoted = await post({ action: "promote", id: rollout.id });
    expect(promoted.status).toBe(200);
    expect(await promoted.json()).toMatchObject({ id: rollout.id, state: "promoted" });
    await waitUntil(() => events.events.filter((event) => event.event === "rollout").length === 2);
    const steps = events.events.filter((event) => event.event === "rollout").map((event) => JSON.parse(event.data) as { step: string; keys: string[] });
    expect(steps.map((step) => step.step)).toEqual(["staged", "promoted"]);
    expect(steps[0]!.keys).toEqual(["ticker.interval", "ticker.token"]);
    // the host that was not a canary applied it at the promotion, through the stream
    await waitUntil(() => events.events.some((event) => event.event === "message" && event.data.includes('"value":1500')));
  });

  it("brings a host that was away during a rollout into the right state, and says on a canary that a value is staged", async () => {
    const { hosts, etcd } = await fleetOf(["a", "b", "c"], withHttp);
    const [a, b, c] = hosts;
    c!.watch.child.kill("SIGTERM");
    await c!.watch.exited;
    const started = await cdp(["rollout", "start", "--dir", a!.dir, "--hosts", "b", "--bake", "30", "ticker:interval:1500"]);
    expect(started.code).toBe(0);
    const get = await cdp(["get", "--dir", b!.dir, "--schemas", SCHEMAS, "ticker"]);
    expect(get.output).toContain("staged here by rollout r-");
    expect(get.output).toContain("ticker.interval");
    // c comes back while it bakes: not a canary, it does not apply it
    const back = await startWatch(c!.dir, [...fleetArgs(etcd, "/cdp/rollouts", "c"), "--http", "127.0.0.1:0"]);
    await waitUntil(async () => (await rollouts(c!.dir)).length === 1);
    expect(await interval(c!.dir)).toBe(1000);
    back.child.kill("SIGTERM");
    await back.exited;
    expect((await cdp(["rollout", "promote", "--dir", a!.dir])).code).toBe(0);
    // and away again past the promotion: it applies it as it catches up
    await startFleetHost(etcd, "c", { prefix: "/cdp/rollouts", dir: c!.dir });
    await waitUntil(async () => (await interval(c!.dir)) === 1500);
    expect((await rollouts(c!.dir))[0]).toMatchObject({ state: "promoted" });
    expect((await cdp(["get", "--dir", b!.dir, "--schemas", SCHEMAS, "ticker"])).output).not.toContain("staged here");
  });
});

describe("cdp rollout under faults (kill -9)", { timeout: FLEET_TIMEOUT }, () => {
  it("promotes at the deadline though the host that started the rollout was killed during the bake", async () => {
    const { hosts } = await fleetOf(["a", "b", "c"], withHttp);
    const [a, b, c] = hosts;
    const started = runCdp(["rollout", "start", "--dir", a!.dir, "--hosts", "b", "--bake", "15", "--wait", "ticker:interval:1500"]);
    await waitUntil(async () => (await interval(b!.dir)) === 1500);
    a!.watch.child.kill("SIGKILL");
    await a!.watch.exited;
    // the command waiting on A hears no more, and says where to ask
    expect(await started.exited).toBe(1);
    expect(started.output()).toContain("stopped (the fleet's other hosts carry a rollout on");
    await waitUntil(async () => (await interval(c!.dir)) === 1500);
    expect((await rollouts(b!.dir))[0]).toMatchObject({ state: "promoted", reason: "the bake ended with no veto" });
  });

  it("aborts when a canary is killed: it disappears from the fleet, and takes the value back when it returns", async () => {
    const { hosts, etcd } = await fleetOf(["a", "b", "c"], withHttp);
    const [a, b, c] = hosts;
    const started = runCdp(["rollout", "start", "--dir", a!.dir, "--hosts", "b", "--bake", "60", "--wait", "ticker:interval:1500"]);
    await waitUntil(async () => (await interval(b!.dir)) === 1500);
    b!.watch.child.kill("SIGKILL");
    await b!.watch.exited;
    expect(await started.exited).toBe(1);
    expect(started.output()).toContain("canary b disappeared");
    expect(await interval(c!.dir)).toBe(1000);
    await startFleetHost(etcd, "b", { prefix: "/cdp/rollouts", dir: b!.dir });
    await waitUntil(async () => (await interval(b!.dir)) === 1000);
    expect(await readText(join(a!.dir, "cdp.rej"))).toContain("canary b disappeared");
  });

  it("promotes after the etcd leader is killed during the bake (a 3-member etcd)", async () => {
    const { hosts, etcd } = await fleetOf(["a", "b", "c"], withHttp, 3);
    const started = runCdp(["rollout", "start", "--dir", hosts[0]!.dir, "--hosts", "b", "--bake", "6", "--wait", "ticker:interval:1500"]);
    await waitUntil(async () => (await interval(hosts[1]!.dir)) === 1500);
    etcd.members[await leaderOf(etcd)]!.child.kill("SIGKILL");
    expect(await started.exited).toBe(0);
    for (const host of hosts) await waitUntil(async () => (await interval(host.dir)) === 1500);
  });
});
