// Scoped tokens through the sidecar's HTTP API: what each scope, app list and `secrets` allows on
// each endpoint, the event stream per client, the audit log, /metrics, and a token file that
// changes while cdp runs.
import { appendFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { connectCdp, startCdp } from "../src/index.js";
import { afterThisTest, capturedLogger, openEvents, SCHEMAS, tempDir, waitUntil } from "./helpers.js";

const TOKENS = {
  reader: "reader-token-0123456789",
  vault: "vault-token-0123456789",
  writer: "writer-token-0123456789",
  boss: "boss-token-0123456789",
  dbadmin: "dbadmin-token-0123456789",
  legacy: "legacy-write-0123456789",
};

const TOKEN_FILE = `# who may do what
read  ${TOKENS.reader} reader apps=ticker
read  ${TOKENS.vault} vault apps=tick* secrets
write ${TOKENS.writer} writer apps=ticker
admin ${TOKENS.boss} boss
admin ${TOKENS.dbadmin} dbadmin apps=db
write ${TOKENS.legacy}
`;

async function served(tokens = TOKEN_FILE) {
  const dir = await tempDir();
  const tokenFile = join(await tempDir(), "tokens");
  await writeFile(tokenFile, tokens, { mode: 0o600 });
  const { logger, lines: logs } = capturedLogger();
  const cdp = await startCdp({ init: true, dir, schemas: SCHEMAS, logger, http: { listen: "127.0.0.1:0", tokenFile, waitMs: 10_000 } });
  afterThisTest(() => cdp.stop());
  const call = (token: keyof typeof TOKENS, path: string, init: RequestInit = {}) =>
    fetch(`${cdp.url}${path}`, { ...init, headers: { authorization: `Bearer ${TOKENS[token]}`, ...(init.headers as Record<string, string>) } });
  return { cdp, dir, tokenFile, call, logs };
}

const text = (body: string): RequestInit => ({ method: "POST", body, headers: { "content-type": "text/plain" } });
const json = (body: object): RequestInit => ({ method: "POST", body: JSON.stringify(body), headers: { "content-type": "application/json" } });

describe("scoped tokens", () => {
  it("allows and refuses each endpoint by scope and app, and says what the token lacks", async () => {
    const { cdp, dir, call } = await served();
    await appendFile(join(dir, "cdp.new"), "ticker:interval:1500\ndb:host:db1\nticker:interval:5\ndb:pool:7\nnothing at all\n");
    await waitUntil(() => cdp.revision >= 2);
    await waitUntil(async () => ((await (await call("boss", "/v1/rejections")).json()) as unknown[]).length === 3);

    const outcome = async (token: keyof typeof TOKENS, path: string, init?: RequestInit) => {
      const response = await call(token, path, init);
      const body = (await response.json()) as { error?: string };
      return [response.status, body.error ?? "ok"];
    };
    const SCOPE = (name: string, has: string, needs: string, what: string) => `the token "${name}" has the ${has} scope: ${what} needs ${needs}`;
    const APP = (name: string, app: string, apps: string) => `the token "${name}" does not cover app "${app}" (its apps: ${apps})`;
    const cases: [keyof typeof TOKENS, string, RequestInit | undefined, [number, string]][] = [
      // read: its apps' configs, history, rejections, events; nothing else
      ["reader", "/v1/config/ticker", undefined, [200, "ok"]],
      ["reader", "/v1/config/db", undefined, [403, APP("reader", "db", "ticker")]],
      ["reader", "/v1/config/db/host", undefined, [403, APP("reader", "db", "ticker")]],
      ["reader", "/v1/history?app=db", undefined, [403, APP("reader", "db", "ticker")]],
      ["reader", "/v1/events?app=db", undefined, [403, APP("reader", "db", "ticker")]],
      ["reader", "/v1/changes", text("ticker:interval:1600\n"), [403, SCOPE("reader", "read", "write", "POST /v1/changes")]],
      ["reader", "/v1/plan", json({ files: {} }), [403, SCOPE("reader", "read", "admin", "POST /v1/plan")]],
      ["reader", "/v1/rollback", json({ last: true, dryRun: true }), [403, SCOPE("reader", "read", "admin", "POST /v1/rollback")]],
      ["reader", "/v1/hosts", undefined, [200, "ok"]],
      ["reader", "/v1/rollouts", undefined, [200, "ok"]],
      ["reader", "/v1/rejections", undefined, [200, "ok"]],
      ["reader", "/v1/token", undefined, [200, "ok"]],
      // write: also changes to its apps; no rollback, rollout or plan
      ["writer", "/v1/changes", text("ticker:interval:1600\n"), [200, "ok"]],
      ["writer", "/v1/changes", text("ticker:interval:1700\ndb:host:db2\n"), [403, APP("writer", "db", "ticker")]],
      ["writer", "/v1/rollback", json({ last: true, dryRun: true }), [403, SCOPE("writer", "write", "admin", "POST /v1/rollback")]],
      ["writer", "/v1/changes?at=%2B1h", text("db:host:later\n"), [403, APP("writer", "db", "ticker")]],
      ["reader", "/v1/schedule", undefined, [200, "ok"]],
      ["reader", "/v1/schedule/s-00000000", { method: "DELETE" }, [403, SCOPE("reader", "read", "write", "DELETE /v1/schedule/s-00000000")]],
      ["writer", "/v1/rollouts", json({ action: "abort" }), [403, SCOPE("writer", "write", "admin", "POST /v1/rollouts")]],
      // admin: also rollbacks and plans, on its apps only
      ["boss", "/v1/rollback", json({ to: 1, dryRun: true }), [200, "ok"]],
      ["dbadmin", "/v1/rollback", json({ to: 1, dryRun: true }), [403, APP("dbadmin", "ticker", "db")]],
      ["dbadmin", "/v1/plan", json({ files: { "ticker.schema.json": { type: "object" } } }), [403, APP("dbadmin", "ticker", "db")]],
      ["dbadmin", "/v1/changes", text("db:host:db3\n"), [200, "ok"]],
      // the old `write TOKEN` line: changes to every app, as before
      ["legacy", "/v1/changes", text("db:host:db4\nticker:name:old-line\n"), [200, "ok"]],
      ["legacy", "/v1/config/db", undefined, [200, "ok"]],
    ];
    for (const [token, path, init, expected] of cases) expect([token, path, await outcome(token, path, init)]).toEqual([token, path, expected]);

    // what a scoped token is served is only its apps
    expect(Object.keys((await (await call("reader", "/v1/config")).json()) as object)).toEqual(["ticker"]);
    expect(Object.keys((await (await call("boss", "/v1/config")).json()) as object).sort()).toEqual(["db", "ticker"]);
    const history = (await (await call("reader", "/v1/history")).json()) as { app: string }[];
    expect(history.length).toBeGreaterThan(0);
    expect(new Set(history.map((entry) => entry.app))).toEqual(new Set(["ticker"]));
    const rejections = (await (await call("reader", "/v1/rejections")).json()) as { reason: string }[];
    expect(rejections.map((rejection) => rejection.reason)).toEqual(["ticker.interval must be > 200, got 5"]);
    expect(((await (await call("boss", "/v1/rejections")).json()) as unknown[]).length).toBe(3); // "nothing at all" names no app: only for every-app tokens
    expect(await (await call("dbadmin", "/v1/token")).json()).toEqual({ name: "dbadmin", scope: "admin", apps: ["db"], secrets: false });

    // refusals are counted by what the token lacked
    const metrics = await (await call("reader", "/metrics")).text();
    expect(metrics).toContain('cdp_http_refusals_total{scope="app"} 8');
    expect(metrics).toContain('cdp_http_refusals_total{scope="admin"} 4');
    expect(metrics).toContain('cdp_http_refusals_total{scope="write"} 2');
    expect((await fetch(`${cdp.url}/v1/config`)).status).toBe(401);
    expect(await (await call("reader", "/metrics")).text()).toContain('cdp_http_refusals_total{scope="token"} 1');
  });

  it("serves secret values only to a token with secrets, in the config, the event stream and the remote client", async () => {
    const { cdp, dir, call, logs } = await served();
    const readerEvents = openEvents(`${cdp.url}/v1/events`, { authorization: `Bearer ${TOKENS.reader}` });
    const vaultEvents = openEvents(`${cdp.url}/v1/events`, { authorization: `Bearer ${TOKENS.vault}` });
    const dbEvents = openEvents(`${cdp.url}/v1/events`, { authorization: `Bearer ${TOKENS.dbadmin}` });
    await waitUntil(() => [readerEvents, vaultEvents, dbEvents].every((events) => events.status() === 200));
    await appendFile(join(dir, "cdp.new"), "ticker:token:hunter2-secret\ndb:host:db1\nticker:interval:1500\n");
    await waitUntil(() => cdp.revision >= 3);
    await waitUntil(() => vaultEvents.changes().length === 2 && readerEvents.changes().length === 2 && dbEvents.changes().length === 1);

    expect(await (await call("vault", "/v1/config/ticker/token")).json()).toBe("hunter2-secret");
    expect(((await (await call("vault", "/v1/config/ticker")).json()) as { token?: string }).token).toBe("hunter2-secret");
    const refused = await call("reader", "/v1/config/ticker/token");
    expect([refused.status, ((await refused.json()) as { error: string }).error]).toEqual([
      403,
      'ticker.token is secret (writeOnly): it is served only to a token with "secrets"',
    ]);
    expect(await (await call("reader", "/v1/config/ticker")).text()).not.toContain("hunter2");
    expect(await (await call("boss", "/v1/config")).text()).not.toContain("hunter2"); // admin is not secrets

    expect(vaultEvents.changes()[0]).toMatchObject({ app: "ticker", key: "token", secret: true, value: "hunter2-secret" });
    expect(readerEvents.changes()[0]).toMatchObject({ app: "ticker", key: "token", secret: true });
    expect(JSON.stringify(readerEvents.events)).not.toContain("hunter2");
    expect(dbEvents.changes().map((change) => change.app)).toEqual(["db"]);

    const remote = await connectCdp({ url: cdp.url!, token: TOKENS.vault, logger: capturedLogger().logger });
    afterThisTest(() => remote.stop());
    expect(remote.get("ticker", "token")).toBe("hunter2-secret");
    await appendFile(join(dir, "cdp.new"), "ticker:token:correct-horse\n");
    await waitUntil(() => remote.get("ticker", "token") === "correct-horse");
    const plain = await connectCdp({ url: cdp.url!, token: TOKENS.reader, logger: capturedLogger().logger });
    afterThisTest(() => plain.stop());
    expect(plain.get("ticker", "token")).toBeUndefined();

    // each read of secrets and each change is in the log with the token's name, and never the value
    const audit = logs.filter((line) => String(line.msg).startsWith("audit:"));
    expect(audit.some((line) => line.msg === "audit: secrets read" && line.token === "vault")).toBe(true);
    await call("writer", "/v1/changes", text("ticker:interval:1600\n"));
    expect(logs.some((line) => line.msg === "audit: a change requested" && line.token === "writer" && line.path === "/v1/changes")).toBe(true);
    expect(JSON.stringify(logs)).not.toContain("hunter2");
  });

  it("follows a token file that changes: a new token works at once, a malformed one is refused and the old tokens stay", async () => {
    const { tokenFile, logs, cdp } = await served();
    const fresh = "fresh-token-0123456789";
    const as = (token: string) => fetch(`${cdp.url}/v1/config`, { headers: { authorization: `Bearer ${token}` } });
    expect((await as(fresh)).status).toBe(401);
    await writeFile(tokenFile, `${TOKEN_FILE}read ${fresh} newcomer apps=db\n`);
    await waitUntil(async () => (await as(fresh)).status === 200, 20_000, "the new token is taken");
    expect(Object.keys((await (await as(fresh)).json()) as object)).toEqual(["db"]);

    await writeFile(tokenFile, `read ${fresh} newcomer apps=db\nsuperuser ${TOKENS.boss}\n`);
    await waitUntil(() => logs.some((line) => String(line.msg).startsWith("the token file is refused")), 20_000, "the bad file is refused");
    expect(logs.find((line) => String(line.msg).startsWith("the token file is refused"))?.msg).toContain(`${tokenFile}:2: expected`);
    expect((await as(TOKENS.boss)).status).toBe(200);
    expect((await as(fresh)).status).toBe(200);
  });
});
