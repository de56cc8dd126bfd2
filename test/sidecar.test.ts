// The sidecar's HTTP API through a real server on an ephemeral loopback port.
import { appendFile, chmod, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { startCdp, type Cdp, type CdpOptions, type HttpOptions } from "../src/index.js";
import { spawn } from "node:child_process";
import { connect } from "node:net";
import {
  afterThisTest,
  capturedLogger,
  cdp as runCli,
  runCdp,
  journalOf,
  openEvents,
  readText,
  SCHEMAS,
  startWatch,
  tempDir,
  waitUntil,
  dataDir,
} from "./helpers.js";

const READ_TOKEN = "read-token-0123456789abcdef";
const WRITE_TOKEN = "write-token-0123456789abcdef";

/** cdp embedded with its sidecar on a free loopback port. */
async function served(options: Omit<Partial<CdpOptions>, "http"> & { http?: Partial<HttpOptions> } = {}) {
  const dir = options.dir ?? (await tempDir());
  const { logger, lines } = capturedLogger();
  const cdp = await startCdp({ init: true, dir, schemas: SCHEMAS, logger, ...options, http: { listen: "127.0.0.1:0", ...options.http } });
  afterThisTest(() => cdp.stop());
  const url = cdp.url!;
  const call = (path: string, init: RequestInit = {}) => fetch(`${url}${path}`, init);
  return { cdp, dir, url, call, logs: lines };
}

async function tokenFile(): Promise<string> {
  const path = join(await tempDir(), "tokens");
  await writeFile(path, `# who may use the sidecar\nread ${READ_TOKEN}\nwrite ${WRITE_TOKEN}\n`, { mode: 0o600 });
  return path;
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const post = (body: string, headers: Record<string, string> = {}): RequestInit => ({
  method: "POST",
  body,
  headers: { "content-type": "text/plain", ...headers },
});

async function until(cdp: Cdp, revision: number): Promise<void> {
  await waitUntil(() => cdp.revision >= revision);
}

describe("GET /v1/config", () => {
  it("serves all apps, one app or one key as JSON with the revision as ETag, and 304 when unchanged", async () => {
    const { cdp, dir, call } = await served();
    await appendFile(join(dir, "cdp.new"), "ticker:interval:1500\nticker:token:s3cret-value\n");
    await until(cdp, 2);

    const all = await call("/v1/config");
    expect(all.status).toBe(200);
    expect(all.headers.get("etag")).toBe('"2"');
    expect(all.headers.get("content-type")).toMatch(/^application\/json/);
    const apps = (await all.json()) as Record<string, Record<string, unknown>>;
    expect(apps.ticker).toMatchObject({ interval: 1500, name: "tick" });
    expect(apps.db).toEqual({ host: "localhost", pool: { min: 1, max: 10 } });
    expect(apps.ticker).not.toHaveProperty("token"); // writeOnly: served only to a token with "secrets"

    expect(await (await call("/v1/config/ticker")).json()).toEqual({ interval: 1500, name: "tick", enabled: true });
    expect(await (await call("/v1/config/ticker/interval")).json()).toBe(1500);
    expect(await (await call("/v1/config/db/pool.max")).json()).toBe(10);

    const unchanged = await call("/v1/config/ticker", { headers: { "if-none-match": '"2"' } });
    expect(unchanged.status).toBe(304);
    expect(unchanged.headers.get("etag")).toBe('"2"');
    expect((await call("/v1/config/ticker", { headers: { "if-none-match": '"1"' } })).status).toBe(200);

    await appendFile(join(dir, "cdp.new"), "ticker:interval:1600\n");
    await until(cdp, 3);
    const changed = await call("/v1/config/ticker/interval", { headers: { "if-none-match": '"2"' } });
    expect(changed.status).toBe(200);
    expect(changed.headers.get("etag")).toBe('"3"');
    expect(await changed.json()).toBe(1600);
  });

  it("answers 404 for an unknown app, key or a key without value, and 403 for a secret key", async () => {
    const { call } = await served();
    const error = async (path: string) => {
      const response = await call(path);
      return { status: response.status, error: ((await response.json()) as { error: string }).error };
    };
    expect(await error("/v1/config/nope")).toEqual({ status: 404, error: 'unknown app "nope"' });
    expect(await error("/v1/config/ticker/nope")).toMatchObject({ status: 404, error: expect.stringContaining('ticker has no key "nope"') });
    expect(await error("/v1/config/ticker/ratio")).toEqual({ status: 404, error: "ticker.ratio has no value" });
    expect(await error("/v1/config/ticker/token")).toEqual({
      status: 403,
      error: 'ticker.token is secret (writeOnly): it is served only to a token with "secrets"',
    });
    expect(await error("/v1/nothing")).toEqual({ status: 404, error: "no such endpoint: /v1/nothing" });
    const wrongMethod = await call("/v1/config", { method: "POST", body: "x" });
    expect(wrongMethod.status).toBe(405);
    expect(wrongMethod.headers.get("allow")).toBe("GET, HEAD");
    expect((await call("/v1/changes")).status).toBe(405);
    expect(await error("/v1/config/%ZZ")).toEqual({ status: 400, error: 'malformed percent-escape in the path: "%ZZ"' });
    expect(await error("/v1/config/ticker/%E0%A4%A")).toMatchObject({ status: 400 });
  });

  it("answers HEAD on every GET endpoint with headers and no body, the event stream included", async () => {
    const { call } = await served();
    for (const path of ["/v1/config", "/v1/config/ticker", "/v1/events", "/v1/events?app=ticker", "/healthz"]) {
      const response = await call(path, { method: "HEAD", signal: AbortSignal.timeout(5000) });
      expect(response.status, path).toBe(200);
      expect(await response.text(), path).toBe("");
    }
    const events = await call("/v1/events", { method: "HEAD", signal: AbortSignal.timeout(5000) });
    expect(events.headers.get("content-type")).toMatch(/^text\/event-stream/);
  });
});

describe("POST /v1/changes", () => {
  it("sends the lines through the inbox and reports each line's outcome once processed", async () => {
    const { cdp, dir, call } = await served();
    const response = await call("/v1/changes", post('ticker:interval:1500\nticker:interval:100\n# a comment\ndb:pool:{"min":2,"max":5}'));
    expect(response.status).toBe(422); // one line was rejected
    expect(await response.json()).toEqual({
      status: "processed",
      revision: 2,
      lines: [
        { line: 1, outcome: "accepted", revision: 1 },
        { line: 2, outcome: "rejected", reason: "ticker.interval must be > 200, got 100" },
        { line: 3, outcome: "ignored" },
        { line: 4, outcome: "accepted", revision: 2 },
      ],
    });
    expect(cdp.get("db", "pool")).toEqual({ min: 2, max: 5 });
    // the same path as echo >>: the lines are in cdp.new after a comment that marks them
    expect(await readText(join(dir, "cdp.new"))).toMatch(/^# from http:127\.0\.0\.1 id=[0-9a-f-]{36}\n# by: http:127\.0\.0\.1\nticker:interval:1500\n/);
    expect(await journalOf(dir)).toEqual(["ticker:interval:1500", 'db:pool:{"min":2,"max":5}']);
    expect(await readText(join(dir, "cdp.rej"))).toContain("ticker:interval:100\n");

    const accepted = await call("/v1/changes", post("ticker:name:sidecar\n"));
    expect(accepted.status).toBe(200);
    expect(await accepted.json()).toMatchObject({ status: "processed", lines: [{ line: 1, outcome: "accepted", revision: 3 }] });
  });

  it("keeps concurrent pushes apart: each caller hears about its own lines", async () => {
    const { call } = await served();
    const responses = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        call("/v1/changes", post(`ticker:name:n${i}\nticker:interval:${i % 2 === 0 ? 100 : 300 + i}\n`)).then((r) => r.json()),
      ),
    );
    responses.forEach((body, i) => {
      const { lines } = body as { lines: { outcome: string }[] };
      expect(lines.map((line) => line.outcome)).toEqual(["accepted", i % 2 === 0 ? "rejected" : "accepted"]);
    });
  });

  it("answers 202 (queued) when the lines are not processed within the wait", async () => {
    // no file events and a slow periodic check: the lines stay in the inbox beyond the wait
    const { cdp, call } = await served({ watchEvents: false, pollIntervalMs: 60_000, http: { waitMs: 200 } });
    const response = await call("/v1/changes", post("ticker:interval:1500\n"));
    expect(response.status).toBe(202);
    expect(await response.json()).toEqual({ status: "queued", revision: 0, lines: [] });
    expect(cdp.revision).toBe(0);
  });

  it("refuses an empty body, another media type, invalid UTF-8 and a body over the limit", async () => {
    const { call } = await served({ http: { maxBodyBytes: 1000 } });
    const status = async (init: RequestInit) => {
      const response = await call("/v1/changes", init);
      return [response.status, ((await response.json()) as { error: string }).error];
    };
    expect(await status(post(""))).toEqual([400, "the body holds no line: send change lines (app:key:value), one per line"]);
    expect(await status(post("{}", { "content-type": "application/json" }))).toEqual([415, "send the change lines as text/plain, not application/json"]);
    expect(await status({ method: "POST", body: Buffer.from([0x74, 0x3a, 0x78, 0x3a, 0xff, 0x0a]), headers: { "content-type": "text/plain" } })).toEqual([
      400,
      "the body is not valid UTF-8",
    ]);
    expect(await status(post(`ticker:name:${"x".repeat(1000)}\n`))).toEqual([413, "the body is over the limit of 1000 bytes"]);
  });

  it("answers 400 with what to send for a JSON body that is not an object (null, an array, a string)", async () => {
    const { call } = await served();
    for (const path of ["/v1/plan", "/v1/rollback", "/v1/rollouts"]) {
      for (const body of ["null", "[]", '"x"', "7"]) {
        const response = await call(path, { method: "POST", body, headers: { "content-type": "application/json" } });
        expect([path, body, response.status]).toEqual([path, body, 400]);
        expect(((await response.json()) as { error: string }).error).toMatch(/^send JSON: \{/);
      }
    }
  });

  it("refuses a change from another origin (a web page the operator visits)", async () => {
    const { call } = await served();
    const response = await call("/v1/changes", post("ticker:interval:1500\n", { origin: "http://evil.example" }));
    expect(response.status).toBe(403);
    expect(await response.json()).toEqual({ error: "refused: a change from another origin (http://evil.example)" });
  });
});

describe("bearer tokens", () => {
  it("asks for a token (401), tells read from write (403), and leaves the probes and the page open", async () => {
    const { call } = await served({ http: { tokenFile: await tokenFile() } });
    const noToken = await call("/v1/config");
    expect(noToken.status).toBe(401);
    expect(noToken.headers.get("www-authenticate")).toBe('Bearer realm="cdp"');
    expect((await call("/v1/config", { headers: bearer("wrong-token-0123456789abcdef") })).status).toBe(401);
    expect((await call("/v1/config", { headers: bearer("short") })).status).toBe(401);
    expect((await call("/v1/config", { headers: { authorization: READ_TOKEN } })).status).toBe(401); // no "Bearer"
    expect((await call("/v1/config", { headers: bearer(READ_TOKEN) })).status).toBe(200);
    expect((await call("/metrics", { headers: bearer(READ_TOKEN) })).status).toBe(200);
    expect((await call("/metrics")).status).toBe(401);

    const readOnly = await call("/v1/changes", post("ticker:interval:1500\n", bearer(READ_TOKEN)));
    expect(readOnly.status).toBe(403);
    expect(await readOnly.json()).toEqual({ error: 'the token "token-2" has the read scope: POST /v1/changes needs write' });
    expect((await call("/v1/changes", post("ticker:interval:1500\n"))).status).toBe(401);
    expect((await call("/v1/changes", post("ticker:interval:1500\n", bearer(WRITE_TOKEN)))).status).toBe(200);
    expect((await call("/v1/config/ticker/interval", { headers: bearer(WRITE_TOKEN) })).status).toBe(200); // write includes read

    expect((await call("/healthz")).status).toBe(200);
    expect((await call("/readyz")).status).toBe(200);
    expect((await call("/")).status).toBe(200);
  });

  it("refuses to start on a non-loopback address without a token file, or with a bad token file", async () => {
    const dir = await dataDir();
    const open = await runCli(["watch", "--dir", dir, "--schemas", SCHEMAS, "--http", "0.0.0.0:0"]);
    expect(open.code).toBe(2);
    expect(open.output).toContain("cdp: refusing to serve on 0.0.0.0 without --token-file: anyone who reaches it could read and change the configuration");

    const bad = join(dir, "bad-tokens");
    await writeFile(bad, "root abcdefghijklmnopqrstuvwxyz\n", { mode: 0o600 });
    const badScope = await runCli(["watch", "--dir", dir, "--schemas", SCHEMAS, "--http", "127.0.0.1:0", "--token-file", bad]);
    expect(badScope.code).toBe(2);
    expect(badScope.output).toContain(`cdp: ${bad}:1: expected "read|write|admin TOKEN NAME [apps=APP,GLOB*] [secrets]", got scope "root"`);

    await writeFile(bad, "write short\n");
    expect((await runCli(["watch", "--dir", dir, "--schemas", SCHEMAS, "--http", "127.0.0.1:0", "--token-file", bad])).output).toContain(
      `cdp: ${bad}:1: a token must have at least 16 characters`,
    );
    const stray = await runCli(["watch", "--dir", dir, "--schemas", SCHEMAS, "--token-file", bad]);
    expect(stray.code).toBe(2);
    expect(stray.output).toContain("cdp: --token-file needs --http");
    const address = await runCli(["watch", "--dir", dir, "--schemas", SCHEMAS, "--http", "localhost"]);
    expect(address.output).toContain('cdp: --http takes HOST:PORT or PORT, got "localhost"');
  });

  it("serves a non-loopback address with a token file, and warns when the file is readable by others", async () => {
    const tokens = await tokenFile();
    await chmod(tokens, 0o644);
    const { url, logs } = await served({ http: { listen: "0.0.0.0:0", tokenFile: tokens } });
    const port = new URL(url).port;
    expect(url).toBe(`http://0.0.0.0:${port}`);
    expect((await fetch(`http://127.0.0.1:${port}/v1/config/ticker/interval`, { headers: bearer(READ_TOKEN) })).status).toBe(200);
    expect(logs.some((line) => String(line.msg).includes("is readable by group or others (mode 644)"))).toBe(true);
  });

  it("without tokens, refuses a Host that is not loopback (DNS rebinding)", async () => {
    const { url } = await served();
    const { port } = new URL(url);
    const response = await new Promise<number>((resolve, reject) => {
      import("node:http").then(({ get }) =>
        get({ host: "127.0.0.1", port, path: "/v1/config", headers: { host: `attacker.example:${port}` } }, (res) => resolve(res.statusCode!)).on(
          "error",
          reject,
        ),
      );
    });
    expect(response).toBe(403);
  });
});

describe("GET /v1/events", () => {
  it("streams each accepted change with its revision as id, in order; secrets without their value", async () => {
    const { cdp, url, call } = await served();
    const stream = openEvents(`${url}/v1/events`);
    await waitUntil(() => stream.comments.length > 0);
    expect(stream.status()).toBe(200);
    await call("/v1/changes", post("ticker:interval:1500\nticker:interval:100\nticker:token:s3cret-value\ndb:host:example.org\n"));
    await waitUntil(() => stream.events.length === 3);
    expect(stream.events.map((event) => event.id)).toEqual(["1", "2", "3"]);
    const [first, secret, host] = stream.changes();
    expect(first).toEqual({
      revision: 1,
      app: "ticker",
      key: "interval",
      value: 1500,
      previous: 1000,
      time: expect.any(String),
      source: expect.stringMatching(/^cdp\.new:\d+$/),
      by: "http:127.0.0.1",
    });
    expect(secret).toEqual({
      revision: 2,
      app: "ticker",
      key: "token",
      secret: true,
      time: expect.any(String),
      source: expect.any(String),
      by: "http:127.0.0.1",
    });
    expect(JSON.stringify(stream.events)).not.toContain("s3cret-value");
    expect(host).toMatchObject({ revision: 3, app: "db", key: "host", value: "example.org", previous: "localhost" });
    expect(cdp.revision).toBe(3);
  });

  it("filters by app and by key, and sends keep-alive comments on an idle stream", async () => {
    const { cdp, url, dir } = await served({ http: { keepAliveMs: 50 } });
    const byApp = openEvents(`${url}/v1/events?app=db`);
    const byKey = openEvents(`${url}/v1/events?app=ticker&key=limits.max`);
    await waitUntil(() => byApp.comments.length > 0 && byKey.comments.length > 0);
    await appendFile(join(dir, "cdp.new"), 'ticker:interval:1500\ndb:host:a.example\nticker:limits:{"min":1,"max":3}\nticker:limits.min:2\n');
    await until(cdp, 4);
    await waitUntil(() => byApp.events.length === 1 && byKey.events.length === 1);
    expect(byApp.changes()).toMatchObject([{ revision: 2, app: "db", key: "host" }]);
    expect(byKey.changes()).toMatchObject([{ revision: 3, key: "limits", value: { min: 1, max: 3 } }]);
    await waitUntil(() => byApp.comments.some((comment) => comment === ": keep-alive"));

    const unknown = await fetch(`${url}/v1/events?app=nope`);
    expect(unknown.status).toBe(404);
    expect((await fetch(`${url}/v1/events?key=interval`)).status).toBe(400);
    expect((await fetch(`${url}/v1/events`, { headers: { "last-event-id": "x" } })).status).toBe(400);
    expect((await fetch(`${url}/v1/events`, { headers: { "last-event-id": "0x10" } })).status).toBe(400); // not read as 16
    expect((await fetch(`${url}/v1/events?since=1e3`)).status).toBe(400);
  });

  it("after a reconnect with Last-Event-ID, sends every missed change in order before live ones", async () => {
    const { cdp, url, call } = await served();
    await call("/v1/changes", post("ticker:interval:1500\nticker:interval:1600\nticker:interval:1700\n"));
    const resumed = openEvents(`${url}/v1/events`, { "last-event-id": "1" });
    await waitUntil(() => resumed.events.length === 2);
    await call("/v1/changes", post("ticker:interval:1800\n"));
    await waitUntil(() => resumed.events.length === 3);
    expect(resumed.changes().map((change) => change.value)).toEqual([1600, 1700, 1800]);
    expect(resumed.events.map((event) => event.id)).toEqual(["2", "3", "4"]);
    expect(cdp.revision).toBe(4);
  });

  it("catches a client up from the journal after a restart of cdp, and with a snapshot once compacted away", async () => {
    const dir = await dataDir();
    const first = await served({ dir });
    await first.call("/v1/changes", post(Array.from({ length: 5 }, (_, i) => `ticker:interval:${1000 + i + 1}`).join("\n")));
    await first.cdp.stop();

    const second = await served({ dir });
    const resumed = openEvents(`${second.url}/v1/events`, { "last-event-id": "2" });
    await waitUntil(() => resumed.events.length === 3);
    expect(resumed.changes().map((change) => [change.revision, change.value, change.previous])).toEqual([
      [3, 1003, 1002],
      [4, 1004, 1003],
      [5, 1005, 1004],
    ]);
    await second.cdp.stop();

    // compacted to the state alone: the changes after revision 2 are no longer in the journal
    expect((await runCli(["compact", "--dir", dir, "--schemas", SCHEMAS, "--keep", "0"])).code).toBe(0);
    const third = await served({ dir });
    const reset = openEvents(`${third.url}/v1/events`, { "last-event-id": "2" });
    await waitUntil(() => reset.events.length === 1);
    expect(reset.events[0]).toMatchObject({ id: "5", event: "snapshot" });
    const snapshot = JSON.parse(reset.events[0]!.data) as { revision: number; apps: Record<string, Record<string, unknown>> };
    expect(snapshot.revision).toBe(5);
    expect(snapshot.apps.ticker).toMatchObject({ interval: 1005 });
    await third.call("/v1/changes", post("ticker:interval:1500\n"));
    await waitUntil(() => reset.events.length === 2);
    expect(reset.changes()).toMatchObject([{ revision: 6, value: 1500 }]);
  });

  it("sends rejections as events to clients that ask for them", async () => {
    const { url, call } = await served();
    const stream = openEvents(`${url}/v1/events?rejections=1`);
    await waitUntil(() => stream.comments.length > 0);
    await call("/v1/changes", post("ticker:interval:100\nticker:token:short\n"));
    await waitUntil(() => stream.events.length === 2);
    const [interval, token] = stream.events.map((event) => ({ event: event.event, ...(JSON.parse(event.data) as object) }));
    expect(interval).toMatchObject({ event: "rejected", reason: "ticker.interval must be > 200, got 100", text: "ticker:interval:100" });
    expect(token).toMatchObject({ event: "rejected", reason: expect.stringContaining("ticker.token") });
    expect(token).not.toHaveProperty("text"); // a secret's value is never served, even rejected
  });
});

describe("history, rollback, rejections", () => {
  it("GET /v1/history lists the changes newest first, filtered and limited", async () => {
    const { call } = await served();
    await call("/v1/changes", post("ticker:interval:1500\ndb:host:a.example\nticker:interval:1600\nticker:token:s3cret-value\n"));
    const all = (await (await call("/v1/history")).json()) as { revision: number; key: string; value: unknown }[];
    expect(all.map((entry) => entry.revision)).toEqual([4, 3, 2, 1]);
    expect(JSON.stringify(all)).not.toContain("s3cret-value");
    const interval = (await (await call("/v1/history?app=ticker&key=interval&limit=1")).json()) as object[];
    expect(interval).toEqual([expect.objectContaining({ revision: 3, app: "ticker", key: "interval", value: 1600, previous: 1500 })]);
    expect((await call("/v1/history?limit=0")).status).toBe(400);
  });

  it("GET /v1/history reads the journal once for any number of requests, then follows the changes as they are applied", async () => {
    const dir = await dataDir();
    const journal = Array.from({ length: 30_000 }, (_, i) => `ticker:name:bootstrap-${i}`);
    await writeFile(join(dir, "cdp"), `${journal.join("\n")}\n`);
    const { call, logs } = await served({ dir });
    const bodies = await Promise.all(Array.from({ length: 20 }, () => call("/v1/history?limit=3").then((r) => r.json())));
    for (const body of bodies)
      expect((body as { value: unknown }[]).map((entry) => entry.value)).toEqual(["bootstrap-29999", "bootstrap-29998", "bootstrap-29997"]);
    await call("/v1/changes", post("ticker:interval:1500\nticker:name:after\n"));
    const after = (await (await call("/v1/history?limit=3")).json()) as { revision: number; key: string; value: unknown; previous: unknown; source: string }[];
    expect(after.map(({ revision, key, value, previous }) => ({ revision, key, value, previous }))).toEqual([
      { revision: 30_002, key: "name", value: "after", previous: "bootstrap-29999" },
      { revision: 30_001, key: "interval", value: 1500, previous: 1000 },
      { revision: 30_000, key: "name", value: "bootstrap-29999", previous: "bootstrap-29998" },
    ]);
    expect(((await (await call("/v1/history?app=ticker&key=interval")).json()) as unknown[]).length).toBe(1);
    expect(logs.filter((line) => String(line.msg).startsWith("read the journal's history once"))).toHaveLength(1);
  });

  it("POST /v1/rollback undoes changes through the inbox, refuses what the schemas reject, and has a dry run", async () => {
    const { cdp, call } = await served();
    await call("/v1/changes", post("ticker:interval:1500\nticker:interval:1600\nticker:name:x\n"));
    const json = (body: unknown): RequestInit => ({ method: "POST", body: JSON.stringify(body), headers: { "content-type": "application/json" } });

    const dry = await call("/v1/rollback", json({ to: 1, dryRun: true }));
    expect(await dry.json()).toEqual({ status: "dry-run", revision: 3, changes: expect.arrayContaining(["ticker:interval:1500", "ticker:name:tick"]) });
    expect(cdp.revision).toBe(3);

    const done = await call("/v1/rollback", json({ to: 1 }));
    expect(done.status).toBe(200);
    expect(await done.json()).toMatchObject({ status: "processed", lines: [{ outcome: "accepted" }, { outcome: "accepted" }] });
    expect(cdp.get("ticker")).toMatchObject({ interval: 1500, name: "tick" });

    const last = await call("/v1/rollback", json({ last: true }));
    expect(last.status).toBe(200);
    expect(cdp.get("ticker", "name")).toBe("x");

    expect((await call("/v1/rollback", json({ to: 99 }))).status).toBe(400);
    expect((await call("/v1/rollback", { method: "POST", body: "not json" })).status).toBe(400);
    expect((await call("/v1/rollback", json({}))).status).toBe(400);
  });

  it("POST /v1/rollback answers 409 when the current schemas refuse the rollback", async () => {
    const { call, cdp } = await served();
    await call("/v1/changes", post("ticker:interval:1500\n"));
    cdp.registerValidator("ticker", (config) => (config.interval === 1000 ? "1000 is banned now" : undefined));
    const refused = await call("/v1/rollback", { method: "POST", body: '{"to": 0}' });
    expect(refused.status).toBe(409);
    expect(await refused.json()).toEqual({
      error: "rollback to revision 0 refused: ticker:interval:1000: ticker refused by its validator: 1000 is banned now",
    });
    expect(cdp.get("ticker", "interval")).toBe(1500);
  });

  it("GET /v1/rejections lists recent rejections, newest first, without secrets", async () => {
    const { call } = await served();
    await call("/v1/changes", post("broken\nticker:interval:100\nticker:token:short\n"));
    const rejections = (await (await call("/v1/rejections?limit=2")).json()) as { source: string; reason: string; text?: string }[];
    expect(rejections).toHaveLength(2);
    expect(rejections[0]).not.toHaveProperty("text");
    expect(rejections[1]).toMatchObject({
      reason: "ticker.interval must be > 200, got 100",
      text: "ticker:interval:100",
      source: expect.stringMatching(/^cdp\.new:\d+$/),
    });
  });
});

describe("probes and metrics", () => {
  it("/healthz is alive; /readyz is 503 while the inbox is unavailable", async () => {
    const { call, dir } = await served({ pollIntervalMs: 50 });
    expect(await (await call("/healthz")).json()).toEqual({ status: "alive" });
    expect(await (await call("/readyz")).json()).toEqual({ ready: true, revision: 0 });
    await writeFile(join(dir, "cdp.new"), "");
    await rename(join(dir, "cdp.new"), join(dir, "cdp.new.old"));
    const { mkdir, rmdir } = await import("node:fs/promises");
    await mkdir(join(dir, "cdp.new")); // a directory in its place: the inbox cannot be read
    await waitUntil(async () => (await call("/readyz")).status === 503);
    expect(await (await call("/readyz")).json()).toEqual({ ready: false, reason: expect.stringContaining("has been unavailable since") });
    await rmdir(join(dir, "cdp.new"));
    await waitUntil(async () => (await call("/readyz")).status === 200);
  });

  it("/metrics counts lines by outcome, and shows the revision, latency, outages, subscriber errors and stream clients", async () => {
    const { cdp, call, url } = await served();
    cdp.subscribe("ticker", () => {
      throw new Error("a broken subscriber");
    });
    const stream = openEvents(`${url}/v1/events`);
    await waitUntil(() => stream.comments.length > 0);
    await call("/v1/changes", post("ticker:interval:1500\nticker:interval:100\nbroken\n"));
    const response = await call("/metrics");
    expect(response.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await response.text();
    const value = (name: string) => Number(new RegExp(`^${name.replace(/[{}]/g, "\\$&")} (\\S+)$`, "m").exec(text)?.[1]);
    expect(value('cdp_lines_total{outcome="accepted"}')).toBe(1);
    expect(value('cdp_lines_total{outcome="rejected"}')).toBe(2);
    expect(value("cdp_revision")).toBe(1);
    expect(value("cdp_apply_latency_seconds_count")).toBe(1);
    expect(value("cdp_subscriber_errors_total")).toBe(1);
    expect(value("cdp_inbox_outages_total")).toBe(0);
    expect(value("cdp_sse_clients")).toBe(1);
    expect(value("cdp_ready")).toBe(1);
    expect(text).toMatch(/^cdp_build_info\{version="\d+\.\d+\.\d+"\} 1$/m);
    expect(Math.abs(value("cdp_last_change_timestamp_seconds") - Date.now() / 1000)).toBeLessThan(60);
  });

  it("/metrics passes promtool check metrics (Prometheus's own linter)", async () => {
    const { call } = await served();
    await call("/v1/changes", post("ticker:interval:1500\n"));
    const text = await (await call("/metrics")).text();
    const child = spawn("/usr/bin/promtool", ["check", "metrics"], { stdio: ["pipe", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (data: Buffer) => (output += data.toString()));
    child.stderr.on("data", (data: Buffer) => (output += data.toString()));
    child.stdin.end(text);
    const code = await new Promise((resolve) => child.on("exit", resolve));
    expect(output).toBe("");
    expect(code).toBe(0);
  });
});

describe("slow and stuck clients", () => {
  it("cuts off a request whose headers do not arrive in time", async () => {
    const { url } = await served({ http: { requestTimeoutMs: 300 } });
    const { port } = new URL(url);
    const socket = connect(Number(port), "127.0.0.1");
    let answer = "";
    socket.on("data", (data: Buffer) => (answer += data.toString()));
    socket.write("GET /v1/config HTTP/1.1\r\nHost: 127.0.0.1\r\n"); // the headers never end
    await new Promise((resolve) => socket.on("close", resolve));
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
  });

  it("drops an event-stream client that stops reading, and serves the others", async () => {
    const { cdp, url, call, logs } = await served();
    const { port } = new URL(url);
    const stuck = connect(Number(port), "127.0.0.1");
    stuck.write("GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    stuck.pause(); // reads nothing: the kernel's buffers fill, then cdp's
    const reading = openEvents(`${url}/v1/events`);
    await waitUntil(() => reading.comments.length > 0);
    const big = JSON.stringify({ blob: "x".repeat(60_000) });
    for (let i = 0; i < 400 && !logs.some((line) => String(line.msg).startsWith("dropping an event-stream client")); i++) {
      await call("/v1/changes", post(`ticker:meta:${big.replace("x", String(i % 10))}\n`));
    }
    expect(logs.some((line) => String(line.msg).startsWith("dropping an event-stream client that does not keep up"))).toBe(true);
    await waitUntil(() => reading.events.length === cdp.revision);
    stuck.destroy();
  });
});

describe("cdp watch --http", () => {
  it("answers /healthz at once and /readyz 503 until the journal is read", async () => {
    const dir = await dataDir();
    const records = Array.from({ length: 300_000 }, (_, i) => `ticker:interval:${1000 + (i % 1000)}\n`).join("");
    await writeFile(join(dir, "cdp"), records);
    const watch = runCdp(["watch", "--dir", dir, "--schemas", SCHEMAS, "--http", "127.0.0.1:0"]);
    await waitUntil(() => watch.output().includes("sidecar listening"));
    const url = /"url":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(watch.output())![1]!;
    // replaying 300,000 records takes a good part of a second: the first answers come before
    const starting = await fetch(`${url}/readyz`);
    expect(starting.status).toBe(503);
    expect(await starting.json()).toEqual({ ready: false, reason: "cdp is starting: reading the schemas and the journal" });
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    expect((await fetch(`${url}/v1/config`)).status).toBe(503);
    await waitUntil(async () => (await fetch(`${url}/readyz`)).status === 200);
    expect(await (await fetch(`${url}/readyz`)).json()).toEqual({ ready: true, revision: 300_000 });
  });

  it("serves the sidecar from the command line and logs where", async () => {
    const dir = await dataDir();
    const watch = await startWatch(dir, ["--http", "127.0.0.1:0"]);
    await waitUntil(() => watch.output().includes("sidecar listening"));
    const url = /"url":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(watch.output())![1]!;
    const response = await fetch(`${url}/v1/changes`, post("ticker:interval:1500\n"));
    expect(await response.json()).toMatchObject({ status: "processed", lines: [{ outcome: "accepted", revision: 1 }] });
    expect(await (await fetch(`${url}/v1/config/ticker/interval`)).json()).toBe(1500);
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
    expect(await readFile(join(dir, "cdp"), "utf8")).toContain("ticker:interval:1500");
  });

  it("answers a target that is not a plain path (//host:port, a host that cannot be, absolute-form) and goes on", async () => {
    const dir = await dataDir();
    const watch = await startWatch(dir, ["--http", "127.0.0.1:0"]);
    await waitUntil(() => watch.output().includes("sidecar listening"));
    const url = /"url":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(watch.output())![1]!;
    const { port } = new URL(url);
    // a raw request: fetch would not send these targets as they are
    const statusOf = (target: string) =>
      new Promise<string>((resolve, reject) => {
        const socket = connect(Number(port), "127.0.0.1", () => socket.write(`GET ${target} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`));
        let answer = "";
        socket.on("data", (data: Buffer) => (answer += data.toString()));
        socket.on("close", () => resolve(answer.split("\r\n", 1)[0]!));
        socket.on("error", reject);
      });
    // `//a:b` read as a URL names a host with an invalid port: cdp exited 1 on it
    expect(await statusOf("//a:b")).toBe("HTTP/1.1 404 Not Found");
    expect(await statusOf("//127.0.0.1/v1/config")).toBe("HTTP/1.1 404 Not Found");
    expect(await statusOf("/\\127.0.0.1/v1/config")).toBe("HTTP/1.1 404 Not Found");
    expect(await statusOf("http://127.0.0.1/v1/config")).toBe("HTTP/1.1 400 Bad Request");
    expect(await statusOf("/v1/config/ticker/../ticker?x=1")).toBe("HTTP/1.1 200 OK");
    expect(watch.child.exitCode).toBeNull();
    await appendFile(join(dir, "cdp.new"), "ticker:interval:1500\n");
    await waitUntil(async () => (await fetch(`${url}/v1/config/ticker/interval`)).status === 200);
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
  });
});
