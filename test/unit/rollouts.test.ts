// A rollout's decisions are plain functions of the request, the fleet's hosts as they say they
// are and the time: judged here without etcd or a host (test/rollouts.test.ts runs them in a fleet).
import { beforeAll, describe, expect, it } from "vitest";
import type { HostStatus } from "../../src/fleet/hosts.js";
import {
  decideRollout,
  FleetRollouts,
  judgeRollout,
  linesAt,
  passedAt,
  pickHosts,
  readRolloutDirective,
  rolloutDirective,
  type Rollout,
  type RolloutContext,
  type RolloutRequest,
  type RolloutStep,
} from "../../src/fleet/rollouts.js";
import { configsOf } from "../../src/lines/values.js";
import { loadSchemas, type Schemas } from "../../src/schemas/schemas.js";
import { SCHEMAS } from "../helpers.js";

let schemas: Schemas;
beforeAll(async () => {
  schemas = await loadSchemas(SCHEMAS);
});

const host = (name: string, ready = true, reason?: string): HostStatus => ({
  host: name,
  revision: 5,
  ready,
  ...(reason ? { reason } : {}),
  diverged: [],
  versions: {},
  time: "2026-12-06T00:00:00.000Z",
});
const FLEET = ["a", "b", "c", "d"].map((name) => host(name));
const T0 = "2026-12-06T10:00:00.000Z";

function context(overrides: Partial<RolloutContext> = {}): RolloutContext {
  const known = new FleetRollouts();
  return {
    schemas,
    validators: new Map(),
    current: configsOf(new Map([["ticker", { interval: 1000, name: "tick", enabled: true }]])),
    rollouts: known,
    hosts: FLEET,
    host: "a",
    time: T0,
    revision: 7,
    source: "cdp.new:3",
    seq: 3,
    ...overrides,
  };
}

type Start = Extract<RolloutRequest, { start: unknown }>["start"];

function staged(request: Start = { id: "r-1", lines: ["ticker:interval:1500"], hosts: ["b"], bakeSeconds: 60 }): Rollout {
  const judged = judgeRollout({ start: request }, context());
  if (!("step" in judged)) throw new Error(judged.reason);
  return judged.step.rollout;
}

describe("the rollout directive", () => {
  it("reads back what it writes, and says what is wrong with a line that is not one", () => {
    const request = { start: { id: "r-1", lines: ["ticker:interval:1500"], hosts: ["b"], bakeSeconds: 60 } };
    expect(readRolloutDirective(rolloutDirective(request))).toEqual(request);
    expect(readRolloutDirective("ticker:interval:1500")).toBeUndefined();
    expect(readRolloutDirective("# rollout: {nope")).toMatch(/must be '# rollout: ' and JSON/);
    expect(readRolloutDirective('# rollout: {"start":{"id":"bad id!"}}')).toMatch(/an id of letters, digits/);
  });
});

describe("starting a rollout", () => {
  it("stages the lines on the canaries, with the values an abort puts back", () => {
    const rollout = staged();
    expect(rollout).toMatchObject({
      id: "r-1",
      app: "ticker",
      lines: ["ticker:interval:1500"],
      before: ["ticker:interval:1000"],
      hosts: ["b"],
      state: "baking",
      bakeUntil: "2026-12-06T10:01:00.000Z",
      staged: 7,
    });
  });

  it("refuses, saying why: an unknown or unready canary, a bad line, two apps, a key with no value yet, no bake", () => {
    const start = (change: object, overrides: Partial<RolloutContext> = {}) =>
      judgeRollout({ start: { id: "r-2", lines: ["ticker:interval:1500"], hosts: ["b"], bakeSeconds: 60, ...change } }, context(overrides));
    expect(start({ hosts: ["zz"] })).toEqual({ reason: "no host named zz in the fleet (its hosts: a, b, c, d)" });
    expect(start({}, { hosts: [host("b", false, "inbox unavailable")] })).toEqual({ reason: "canary b is not ready: inbox unavailable" });
    expect(start({ lines: ["ticker:interval:5"] })).toMatchObject({ reason: expect.stringMatching(/^line 1 \(ticker:interval:5\): /) });
    expect(start({ lines: ["ticker:interval:1500", "db:host:x"] })).toMatchObject({ reason: expect.stringMatching(/a rollout changes one app/) });
    expect(start({ lines: ["ticker:ratio:0.5"] })).toMatchObject({ reason: expect.stringMatching(/ticker.ratio has no value yet/) });
    expect(start({ bakeSeconds: undefined })).toMatchObject({ reason: expect.stringMatching(/needs a bake/) });
    expect(start({}, { hosts: "etcd is away" })).toEqual({ reason: "cannot list the fleet's hosts: etcd is away" });
  });

  it("refuses a second rollout of the same app while the first bakes", () => {
    const rollouts = new FleetRollouts();
    rollouts.take({ step: "staged", rollout: staged() });
    const judged = judgeRollout({ start: { id: "r-2", lines: ["ticker:name:x"], hosts: ["c"], bakeSeconds: 60 } }, context({ rollouts }));
    expect(judged).toMatchObject({ reason: expect.stringMatching(/^ticker is in rollout r-1 \(baking on b until/) });
  });
});

describe("the clock's decision", () => {
  it("waits while the bake runs, and promotes when it is over", () => {
    const rollout = staged();
    expect(decideRollout(rollout, FLEET, { time: "2026-12-06T10:00:59.000Z", revision: 8 })).toBeUndefined();
    const step = decideRollout(rollout, FLEET, { time: "2026-12-06T10:01:00.000Z", revision: 8 });
    expect(step).toMatchObject({ step: "promoted", rollout: { state: "promoted", reason: "the bake ended with no veto", ended: 8 } });
  });

  it("aborts at once when a canary is gone or not ready, bake or no bake", () => {
    const rollout = staged();
    const at = { time: T0, revision: 8 };
    expect(
      decideRollout(
        rollout,
        FLEET.filter((h) => h.host !== "b"),
        at,
      ),
    ).toMatchObject({
      step: "aborted",
      rollout: { reason: "canary b disappeared (it no longer says how it is)" },
    });
    expect(decideRollout(rollout, [host("b", false, "writes held")], at)).toMatchObject({
      step: "aborted",
      rollout: { reason: "canary b is not ready: writes held" },
    });
  });

  it("widens a rollout in steps to the next share of the ready hosts, then promotes", () => {
    const rollout = staged({ id: "r-3", lines: ["ticker:interval:1500"], steps: [25, 50, 100], everySeconds: 30 });
    expect(rollout.hosts).toEqual(["a"]); // 25% of four hosts, the first by name
    const widened = decideRollout(rollout, FLEET, { time: "2026-12-06T10:00:30.000Z", revision: 9 })!;
    expect(widened).toMatchObject({ step: "widened", added: ["b"], rollout: { hosts: ["a", "b"], step: 1, bakeUntil: "2026-12-06T10:01:00.000Z" } });
    expect(decideRollout(widened.rollout, FLEET, { time: "2026-12-06T10:01:00.000Z", revision: 10 })).toMatchObject({ step: "promoted" });
  });

  it("picks the same canaries for the same fleet, at least one, ready ones only", () => {
    expect(pickHosts(FLEET, 50)).toEqual(["a", "b"]);
    expect(pickHosts(FLEET, 1)).toEqual(["a"]);
    expect(pickHosts([host("b"), host("a", false)], 100)).toEqual(["b"]);
  });
});

describe("what each host does at a step", () => {
  it("canaries apply the lines when staged and put the old values back when aborted; the others at the promotion", () => {
    const rollout = staged();
    const step = (kind: RolloutStep["step"]): RolloutStep => ({ step: kind, rollout: { ...rollout, reason: kind } });
    expect(linesAt(step("staged"), "b")?.lines).toEqual(["ticker:interval:1500"]);
    expect(linesAt(step("staged"), "c")).toBeUndefined();
    expect(linesAt(step("aborted"), "b")?.lines).toEqual(["ticker:interval:1000"]);
    expect(linesAt(step("aborted"), "c")).toBeUndefined();
    expect(linesAt(step("promoted"), "b")).toBeUndefined();
    expect(linesAt(step("promoted"), "c")?.lines).toEqual(["ticker:interval:1500"]);
    expect(passedAt(step("staged"), "c")).toBe("rollout r-1 staged on b, baking until 2026-12-06T10:01:00.000Z; not applied on c");
  });
});

describe("what a host knows of the rollouts", () => {
  it("keeps those baking and the 20 most recent that ended, newest first", () => {
    const known = new FleetRollouts();
    const base = staged();
    for (let i = 0; i < 25; i++) known.take({ step: "promoted", rollout: { ...base, id: `r-${i}`, state: "promoted", staged: i } });
    known.take({ step: "staged", rollout: { ...base, id: "r-live", staged: 30 } });
    expect(known.list()).toHaveLength(21);
    expect(known.list()[0]!.id).toBe("r-live");
    expect(known.inProgress("ticker")?.id).toBe("r-live");
    expect(known.get("r-0")).toBeUndefined();
    expect(known.get("r-24")?.state).toBe("promoted");
  });

  it("loads a rollout from etcd as it stood at the host's revision", () => {
    const known = new FleetRollouts();
    const ended = { ...staged(), state: "promoted" as const, ended: 9, endedAt: T0 };
    known.load([ended], 8); // the promotion (revision 9) comes through the log
    expect(known.get("r-1")?.state).toBe("baking");
    known.load([{ ...ended, id: "r-later", staged: 12 }], 8); // staged after this host's revision
    expect(known.get("r-later")).toBeUndefined();
  });
});
