// Staged fleet rollouts on a real etcd: a change baked on canary hosts, then promoted to every
// host or aborted (the canaries take the values back), each step a fleet revision.
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { startEtcd } from "./etcd.js";
import { cdp, getConfig, readText, runCdp, startWatch, tempDir, waitUntil } from "./helpers.js";

async function fleetOf(names: string[], extra: (name: string) => string[] = () => []) {
  const { endpoints } = await startEtcd();
  const cluster = `etcd://${endpoints.map((url) => new URL(url).host).join(",")}`;
  const hosts = [];
  for (const name of names) {
    const dir = await tempDir();
    hosts.push({ name, dir, watch: await startWatch(dir, ["--cluster", cluster, "--cluster-prefix", "/cdp/rollouts", "--cluster-host", name, ...extra(name)]) });
  }
  // every host says how it is before a rollout names it
  await waitUntil(async () => (await hostsSeen(hosts[0]!.dir)) === names.length);
  return { hosts, cluster };
}

/** How many hosts a data directory's watcher sees (from the hosts list its status reads). */
async function hostsSeen(dir: string): Promise<number> {
  const url = /"url":\s*"(http:[^"]+)"/.exec(await readText(join(dir, "cdp.watcher")))?.[1];
  if (!url) return 0;
  return ((await (await fetch(`${url}/v1/hosts`)).json()) as unknown[]).length;
}

const interval = async (dir: string) => (await getConfig(dir, "ticker.interval")) as number;
const rollouts = async (dir: string) => JSON.parse((await cdp(["rollout", "status", "--dir", dir, "--json"])).output) as { id: string; state: string; reason?: string; hosts: string[] }[];

describe("cdp rollout on a fleet of three hosts", () => {
  const withHttp = () => ["--http", "127.0.0.1:0"];

  it("stages a change on the canary only while it bakes, then promotes it to every host (--wait: exit 0)", async () => {
    const { hosts } = await fleetOf(["a", "b", "c"], withHttp);
    const [a, b, c] = hosts;
    const started = runCdp(["rollout", "start", "--dir", a!.dir, "--hosts", "b", "--bake", "3", "--wait", "ticker:interval:1500"]);
    await waitUntil(async () => (await interval(b!.dir)) === 1500);
    // baking: the canary has it, the others do not; a change to the app is refused meanwhile
    expect(await interval(a!.dir)).toBe(1000);
    expect(await interval(c!.dir)).toBe(1000);
    const during = await rollouts(c!.dir);
    expect(during[0]).toMatchObject({ state: "baking", hosts: ["b"] });
    const push = await cdp(["push", "--dir", c!.dir, "ticker:interval:1700"]);
    expect(push.code).toBe(1);
    expect(push.output).toContain(`is in rollout ${during[0]!.id}`);
    expect(await cdp(["history", "--dir", b!.dir, "ticker.interval"]).then((r) => r.output)).toContain(`staged by rollout ${during[0]!.id}`);
    expect(await started.exited).toBe(0);
    expect(started.output()).toContain("promoted");
    for (const host of hosts) await waitUntil(async () => (await interval(host.dir)) === 1500);
    // every host's journal gives the same revision
    const states = await Promise.all(hosts.map(async (host) => (await rollouts(host.dir))[0]));
    for (const state of states) expect(state).toMatchObject({ id: during[0]!.id, state: "promoted" });
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
    expect(await readText(join(b!.dir, "cdp.rej"))).toBe("");
    // the app takes changes again
    expect((await cdp(["push", "--dir", a!.dir, "ticker:interval:1800"])).code).toBe(0);
    for (const host of hosts) await waitUntil(async () => (await interval(host.dir)) === 1800);
  });
});
