// Changes in time (cdp push --at/--for, cdp schedule, the sidecar's /v1/schedule) with real
// processes and files: applied when due and judged again then, taken back when their time is up
// unless changed since, cancelled, and never lost or applied twice across a stop or a kill -9.
import { appendFile, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { cdp, dataDir, FLEET_TIMEOUT, journalOf, openEvents, readText, runCdp, SCHEMAS, startWatch, tempDir, waitUntil } from "./helpers.js";
import { startEtcd, startFleetHost } from "./etcd.js";

type Listed = { id: string; at: string; lines: string[]; by: string | null; reason: string | null; kind: string; restores?: string[] };

async function listed(dir: string): Promise<Listed[]> {
  const { code, output } = await cdp(["schedule", "--dir", dir, "--json"]);
  expect(code, output).toBe(0);
  return JSON.parse(output) as Listed[];
}

async function history(dir: string): Promise<Record<string, unknown>[]> {
  return JSON.parse((await cdp(["history", "--dir", dir, "--json"])).output) as Record<string, unknown>[];
}

/** `cdp push` with its id printed on stdout. */
async function pushInTime(dir: string, args: string[]): Promise<{ code: number | null; id: string; output: string }> {
  const running = runCdp(["push", "--dir", dir, ...args]);
  const code = await running.exited;
  return { code, id: running.stdout().trim(), output: running.output() };
}

describe("cdp push --at", () => {
  it("applies the lines when due, once, with who and why in history and scheduled in events", async () => {
    const dir = await dataDir();
    const watch = await startWatch(dir, ["--http", "127.0.0.1:0"]);
    const url = /"url":"(http:[^"]+)"/.exec(watch.output())![1]!;
    const events = openEvents(`${url}/v1/events`);
    const pushed = await pushInTime(dir, ["--at", "+5s", "--reason", "night shift", "ticker:interval:1500", "ticker:name:night"]);
    expect(pushed.code, pushed.output).toBe(0);
    expect(pushed.id).toMatch(/^s-[0-9a-f]{8}$/);
    expect(pushed.output).toMatch(/scheduled s-[0-9a-f]{8}: ticker:interval:1500, ticker:name:night, at \d{4}-/);
    const [due] = await listed(dir);
    expect(due).toMatchObject({ id: pushed.id, lines: ["ticker:interval:1500", "ticker:name:night"], reason: "night shift", kind: "change" });
    expect(due!.by).toBeTruthy();
    expect(await journalOf(dir)).toEqual([]); // nothing applied yet

    await waitUntil(async () => (await journalOf(dir)).length === 2, 20_000, "the schedule fired");
    expect(await journalOf(dir)).toEqual(["ticker:interval:1500", "ticker:name:night"]);
    expect(await listed(dir)).toEqual([]);
    const [name, interval] = await history(dir);
    expect(interval).toMatchObject({ key: "interval", value: 1500, source: `schedule:${pushed.id}`, scheduled: pushed.id, reason: "night shift", by: due!.by });
    expect(name).toMatchObject({ key: "name", scheduled: pushed.id });
    await waitUntil(() => events.changes().length === 2);
    expect(events.changes()[0]).toMatchObject({ key: "interval", value: 1500, scheduled: pushed.id, by: due!.by });
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
  });

  it("schedules nothing (exit 1) for a change that would be refused now, and rejects into cdp.rej one that no longer holds when due", async () => {
    const dir = await dataDir();
    const watch = await startWatch(dir);
    const refused = await pushInTime(dir, ["--at", "+1h", "ticker:interval:100"]);
    expect(refused.code).toBe(1);
    expect(refused.output).toContain("cdp: refused, nothing scheduled: ticker.interval must be > 200, got 100");
    expect(await listed(dir)).toEqual([]);
    const usage = await cdp(["push", "--dir", dir, "--at", "tomorrow", "ticker:interval:1500"]);
    expect([usage.code, usage.output]).toEqual([
      2,
      expect.stringContaining('--at takes an RFC 3339 time (2026-12-24T02:00:00Z) or +DURATION (+90m), got "tomorrow"'),
    ]);

    // max 5 holds now (min 1); by the time it is due, min is 8
    const later = await pushInTime(dir, ["--at", "+5s", "db:pool.max:5"]);
    expect(later.code).toBe(0);
    expect((await cdp(["push", "--dir", dir, "db:pool.min:8"])).code).toBe(0);
    await waitUntil(async () => (await readText(join(dir, "cdp.rej"))).includes(`source=schedule:${later.id}`), 20_000, "the schedule was judged when due");
    expect(await readText(join(dir, "cdp.rej"))).toMatch(new RegExp(`source=schedule:${later.id} reason: db.pool.max must be >= 8, got 5\\ndb:pool.max:5\\n`));
    expect(await journalOf(dir)).toEqual(["db:pool.min:8"]);
    expect(await listed(dir)).toEqual([]);
    watch.child.kill("SIGTERM");
  });

  it("cancels what is due (cdp schedule cancel, and DELETE /v1/schedule/ID), and says so for an unknown id", async () => {
    const dir = await dataDir();
    const watch = await startWatch(dir, ["--http", "127.0.0.1:0"]);
    const url = /"url":"(http:[^"]+)"/.exec(watch.output())![1]!;
    const first = await pushInTime(dir, ["--at", "+1h", "ticker:interval:1500"]);
    const second = await pushInTime(dir, ["--at", "+2h", "ticker:interval:2500"]);
    expect((await listed(dir)).map((entry) => entry.id)).toEqual([first.id, second.id]);
    const cancelled = await cdp(["schedule", "cancel", "--dir", dir, first.id]);
    expect([cancelled.code, cancelled.output]).toEqual([0, expect.stringContaining(`cancelled ${first.id}`)]);
    const unknown = await cdp(["schedule", "cancel", "--dir", dir, "s-00000000"]);
    expect([unknown.code, unknown.output]).toEqual([1, expect.stringContaining("no schedule s-00000000 is due (cdp schedule lists them)")]);
    const served = (await (await fetch(`${url}/v1/schedule`)).json()) as Listed[];
    expect(served.map((entry) => entry.id)).toEqual([second.id]);
    const deleted = await fetch(`${url}/v1/schedule/${second.id}`, { method: "DELETE" });
    expect([deleted.status, await deleted.json()]).toEqual([200, { status: "cancelled", id: second.id }]);
    expect((await fetch(`${url}/v1/schedule/${second.id}`, { method: "DELETE" })).status).toBe(404);
    expect(await listed(dir)).toEqual([]);
    watch.child.kill("SIGTERM");
  });

  it("schedules over HTTP: POST /v1/changes?at= (201), ?for= (200, applied now), refused (422)", async () => {
    const dir = await dataDir();
    const watch = await startWatch(dir, ["--http", "127.0.0.1:0"]);
    const url = /"url":"(http:[^"]+)"/.exec(watch.output())![1]!;
    const post = (query: string, body: string) =>
      fetch(`${url}/v1/changes?${query}`, { method: "POST", body, headers: { "content-type": "text/plain", "x-cdp-reason": "load test" } });
    const at = await post("at=%2B1h", "ticker:interval:1500\n");
    const made = (await at.json()) as { status: string; id: string; schedule: Listed };
    expect([at.status, made.status, made.schedule.lines, made.schedule.reason]).toEqual([201, "scheduled", ["ticker:interval:1500"], "load test"]);
    const now = await post("for=1h", "ticker:name:loaded\n");
    expect([now.status, ((await now.json()) as { status: string; revision: number }).status]).toEqual([200, "applied"]);
    expect(await journalOf(dir)).toEqual(["ticker:name:loaded"]);
    const bad = await post("at=%2B1h", "ticker:interval:100\n");
    expect([bad.status, ((await bad.json()) as { reason: string }).reason]).toEqual([422, "ticker.interval must be > 200, got 100"]);
    expect((await post("at=yesterday", "ticker:interval:1500\n")).status).toBe(400);
    expect((await listed(dir)).map((entry) => entry.kind)).toEqual(["change", "expiry"]);
    watch.child.kill("SIGTERM");
  });
});

describe("cdp push --for", () => {
  it("applies now and puts the value back when the time is up, or leaves a key someone changed since and says so", async () => {
    const dir = await dataDir();
    const watch = await startWatch(dir);
    const temporary = await pushInTime(dir, ["--for", "5s", "--reason", "debugging", "ticker:interval:1500", "ticker:name:debug"]);
    expect(temporary.code, temporary.output).toBe(0);
    expect(temporary.output).toContain(`applied at revision 2: ticker:interval:1500, ticker:name:debug; schedule ${temporary.id} takes it back 5s later`);
    const [expiry] = await listed(dir);
    expect(expiry).toMatchObject({ id: temporary.id, kind: "expiry", restores: ["ticker:interval:1000", "ticker:name:tick"] });
    // someone else changes the name meanwhile: the end of the temporary change leaves it alone
    expect((await cdp(["push", "--dir", dir, "ticker:name:renamed"])).code).toBe(0);
    await waitUntil(async () => (await journalOf(dir)).includes("ticker:interval:1000"), 20_000, "the temporary change ended");
    expect(await journalOf(dir)).toEqual(["ticker:interval:1500", "ticker:name:debug", "ticker:name:renamed", "ticker:interval:1000"]);
    const entries = await history(dir);
    expect(entries[0]).toMatchObject({
      source: `schedule:${temporary.id}`,
      key: "",
      reason: `the end of ${temporary.id} left ticker.name as it was: it was changed since`,
    });
    expect(entries[1]).toMatchObject({
      key: "interval",
      value: 1000,
      previous: 1500,
      scheduled: temporary.id,
      reason: `the end of "debugging" (${temporary.id}): put back as it was`,
    });
    expect(await listed(dir)).toEqual([]);
    watch.child.kill("SIGTERM");
  });

  it("with --at: a window, applied when due and put back after", async () => {
    const dir = await dataDir();
    const watch = await startWatch(dir);
    const window = await pushInTime(dir, ["--at", "+1s", "--for", "1s", "ticker:enabled:false"]);
    expect(window.code, window.output).toBe(0);
    await waitUntil(async () => (await journalOf(dir)).length === 2, 20_000, "the window opened and closed");
    expect(await journalOf(dir)).toEqual(["ticker:enabled:false", "ticker:enabled:true"]);
    watch.child.kill("SIGTERM");
  });
});

describe("schedules across stops", () => {
  it("applies at start, once and in order, what fell due while the watcher was stopped", async () => {
    const dir = await dataDir();
    const watch = await startWatch(dir);
    // made in one order, due in the other (times fixed now: each push takes its time under load)
    const base = Date.now();
    await pushInTime(dir, ["--at", new Date(base + 9000).toISOString(), "ticker:interval:1500"]);
    await pushInTime(dir, ["--at", new Date(base + 8000).toISOString(), "ticker:interval:2500"]);
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
    expect((await listed(dir)).length).toBe(2);
    await waitUntil(async () => (await listed(dir)).every((entry) => Date.parse(entry.at) < Date.now() - 500), 20_000, "both are due");
    const again = await startWatch(dir);
    await waitUntil(async () => (await journalOf(dir)).length === 2, 20_000, "both fired at start");
    expect(await journalOf(dir)).toEqual(["ticker:interval:2500", "ticker:interval:1500"]); // by their time, not by when they were made
    again.child.kill("SIGTERM");
    await again.exited;
    const third = await startWatch(dir);
    third.child.kill("SIGTERM");
    await third.exited;
    expect(await journalOf(dir)).toHaveLength(2);
  });

  it("never applies a schedule twice nor loses it when the watcher is killed -9 around its time", async () => {
    for (const delayMs of [600, 1000, 1400]) {
      const dir = await dataDir();
      const watch = await startWatch(dir);
      await pushInTime(dir, ["--at", "+1s", "ticker:interval:1500", "ticker:name:once"]);
      await new Promise((resolve) => setTimeout(resolve, delayMs));
      watch.child.kill("SIGKILL");
      await watch.exited;
      const again = await startWatch(dir);
      await waitUntil(async () => (await journalOf(dir)).length >= 2, 20_000, "it fired once");
      await waitUntil(async () => (await listed(dir)).length === 0);
      expect([delayMs, await journalOf(dir)]).toEqual([delayMs, ["ticker:interval:1500", "ticker:name:once"]]);
      expect((await readFile(join(dir, "cdp"), "utf8")).match(/schedule-done/g)).toHaveLength(1);
      again.child.kill("SIGTERM");
      await again.exited;
    }
  });

  it("keeps what is due through a compaction", async () => {
    const dir = await dataDir();
    const watch = await startWatch(dir);
    await appendFile(join(dir, "cdp.new"), "ticker:interval:1500\nticker:interval:1600\n");
    await waitUntil(async () => (await journalOf(dir)).length === 2);
    const later = await pushInTime(dir, ["--at", "+1h", "ticker:interval:2500"]);
    watch.child.kill("SIGTERM");
    await watch.exited;
    expect((await cdp(["compact", "--dir", dir, "--keep", "0"])).code).toBe(0);
    expect((await listed(dir)).map((entry) => entry.id)).toEqual([later.id]);
  });
});

describe("schedules and secrets", () => {
  it("keep a secret value sealed in the journal and the inbox, and show it as [secret]", async () => {
    const dir = join(await tempDir(), "data");
    const key = join(await tempDir(), "secrets.key");
    expect((await cdp(["init", "--dir", dir, "--schemas", SCHEMAS, "--secrets-key", key])).code).toBe(0);
    const watch = await startWatch(dir, ["--secrets-key", key]);
    expect((await cdp(["push", "--dir", dir, "--secrets-key", key, "ticker:token:first-secret"])).code).toBe(0);
    const later = await pushInTime(dir, ["--secrets-key", key, "--at", "+1h", "ticker:token:scheduled-secret"]);
    const temporary = await pushInTime(dir, ["--secrets-key", key, "--for", "1h", "ticker:token:temporary-secret"]);
    expect([later.code, temporary.code]).toEqual([0, 0]);
    for (const output of [later.output, temporary.output]) expect(output).toContain("ticker:token:[secret]");
    const listedNow = await cdp(["schedule", "--dir", dir, "--secrets-key", key, "--json"]);
    expect(JSON.parse(listedNow.output)).toEqual([
      expect.objectContaining({ id: later.id, lines: ["ticker:token:[secret]"] }),
      expect.objectContaining({ id: temporary.id, lines: ["ticker:token:[secret]"], restores: ["ticker:token:[secret]"] }),
    ]);
    for (const secret of ["first-secret", "scheduled-secret", "temporary-secret"]) {
      for (const file of ["cdp", "cdp.new", "cdp.rej"])
        expect([secret, file, (await readText(join(dir, file))).includes(secret)]).toEqual([secret, file, false]);
    }
    watch.child.kill("SIGTERM");
    await watch.exited;
  });
});

describe("schedules in a fleet", () => {
  it("are fleet records: every host knows what is due (one that joins later too), and one host fires each step for all, the one that made them killed -9", {
    timeout: FLEET_TIMEOUT,
  }, async () => {
    const etcd = await startEtcd();
    const a = await startFleetHost(etcd, "a");
    const b = await startFleetHost(etcd, "b");
    const later = await pushInTime(a.dir, ["--at", new Date(Date.now() + 15_000).toISOString(), "--reason", "window", "ticker:interval:1500"]);
    expect(later.code, later.output).toBe(0);
    const temporary = await pushInTime(b.dir, ["--for", "14s", "ticker:name:for-a-while"]);
    expect(temporary.code, temporary.output).toBe(0);
    await waitUntil(async () => (await listed(a.dir)).length === 2 && (await listed(b.dir)).length === 2, 20_000, "both hosts know both");
    const c = await startFleetHost(etcd, "c"); // joins after they were made
    await waitUntil(async () => (await listed(c.dir)).length === 2, 20_000, "the host that joined later knows both");
    expect((await listed(c.dir)).map((entry) => entry.id).sort()).toEqual([later.id, temporary.id].sort());
    // the host that made them is killed before they are due, and comes back after: the others fire them
    a.watch.child.kill("SIGKILL");
    await a.watch.exited;
    await waitUntil(async () => (await journalOf(b.dir)).length === 3, 40_000, "b applied both ends without a");
    const restarted = await startFleetHost(etcd, "a", { dir: a.dir });

    for (const host of [restarted, b, c])
      await waitUntil(async () => (await journalOf(host.dir)).length === 3 && (await listed(host.dir)).length === 0, 40_000, `${host.name} applied both ends`);
    for (const host of [a, b, c]) {
      expect([host.name, (await journalOf(host.dir)).sort()]).toEqual([host.name, ["ticker:interval:1500", "ticker:name:for-a-while", "ticker:name:tick"]]);
      const fired = (await history(host.dir)).filter((entry) => entry.key !== "" && String(entry.source).includes(`schedule:${later.id}`));
      expect(fired).toEqual([expect.objectContaining({ key: "interval", value: 1500, scheduled: later.id, reason: "window" })]);
    }
  });
});

describe("schedules and the clock", () => {
  it("never fires a schedule twice when the clock is set back after it fired, and fires one due when the clock is set forward", async () => {
    const dir = await dataDir();
    const clock = join(await tempDir(), "offset");
    await writeFile(clock, "0");
    const env = { NODE_OPTIONS: `--import=${join(SCHEMAS, "..", "shifted-clock.mjs")}`, CDP_TEST_CLOCK_FILE: clock };
    const watch = runCdp(["watch", "--dir", dir, "--schemas", SCHEMAS], { env });
    await waitUntil(() => watch.output().includes("cdp is watching"));
    const first = await pushInTime(dir, ["--at", "+3s", "ticker:interval:1500"]);
    await waitUntil(async () => (await journalOf(dir)).length === 1, 20_000, "it fired");
    await writeFile(clock, String(-3_600_000)); // an hour back: the time it was due comes again
    const second = await pushInTime(dir, ["--at", "+2h", "ticker:name:two-hours"]);
    await writeFile(clock, String(2 * 3_600_000 + 60_000)); // two hours on: the second is due
    await waitUntil(async () => (await journalOf(dir)).length === 2, 20_000, "the second fired");
    await writeFile(clock, String(-3_600_000));
    // set back again: nothing is due any more; a change after it is the next revision
    expect(await listed(dir)).toEqual([]);
    expect((await cdp(["push", "--dir", dir, "ticker:enabled:false"])).code).toBe(0);
    expect(await journalOf(dir)).toEqual(["ticker:interval:1500", "ticker:name:two-hours", "ticker:enabled:false"]);
    const done = (await readFile(join(dir, "cdp"), "utf8")).match(/schedule-done: \{"id":"(s-[0-9a-f]+)"/g);
    expect(done).toEqual([`schedule-done: {"id":"${first.id}"`, `schedule-done: {"id":"${second.id}"`]);
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
  });
});
