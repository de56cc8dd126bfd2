// The token file's lines: scopes, names, apps and secrets, and what a malformed line says.
import { describe, expect, it } from "vitest";
import { appRefusal, hasScope, parseTokens } from "../../src/sidecar/tokens.js";

const T = "0123456789abcdef-token";

describe("parseTokens", () => {
  it("reads the old lines as before: every app, no secrets, a name or token-LINE", () => {
    const [read, write] = parseTokens(`# comment\n\nread ${T}1\nwrite ${T}2 deploy-bot\n`, "tokens");
    expect(read).toMatchObject({ name: "token-3", scope: "read", apps: undefined, secrets: false });
    expect(write).toMatchObject({ name: "deploy-bot", scope: "write", apps: undefined, secrets: false });
    expect(read!.allows("anything")).toBe(true);
  });

  it("reads scopes, apps with globs and secrets, in either order after the name", () => {
    const [admin, reader, vault] = parseTokens(`admin ${T}1 boss\nread ${T}2 web-reader apps=web,billing*\nread ${T}3 vault secrets apps=web\n`, "f");
    expect(admin).toMatchObject({ scope: "admin", apps: undefined, secrets: false });
    expect(reader).toMatchObject({ name: "web-reader", apps: ["web", "billing*"], secrets: false });
    expect(["web", "billing", "billing-eu", "webx", "shop", "xbilling"].filter((app) => reader!.allows(app))).toEqual(["web", "billing", "billing-eu"]);
    expect(vault).toMatchObject({ apps: ["web"], secrets: true });
    // options without a name: the name is token-LINE
    expect(parseTokens(`read ${T} apps=web`, "f")[0]).toMatchObject({ name: "token-1", apps: ["web"] });
  });

  it("says file:line and what is wrong for a malformed line", () => {
    const cases: [string, string][] = [
      [`root ${T}`, 'f:1: expected "read|write|admin TOKEN NAME [apps=APP,GLOB*] [secrets]", got scope "root"'],
      ["read", 'f:1: expected "read|write|admin TOKEN NAME [apps=APP,GLOB*] [secrets]": the token is missing'],
      ["read short", "f:1: a token must have at least 16 characters"],
      [`read ${T} a/b`, `f:1: a token's name is letters, digits, '_', '.', '@' or '-', at most 64, got "a/b"`],
      [`read ${T} me apps=web;rm`, 'f:1: apps= takes app names and * globs separated by commas, got "web;rm"'],
      [`read ${T} me apps=`, 'f:1: apps= takes app names and * globs separated by commas, got ""'],
      [`read ${T} me everything`, 'f:1: expected "read|write|admin TOKEN NAME [apps=APP,GLOB*] [secrets]", got "everything" after the token'],
      [`read ${T} me secrets secrets`, 'f:1: expected "read|write|admin TOKEN NAME [apps=APP,GLOB*] [secrets]", got "secrets" after the token (given twice)'],
    ];
    for (const [line, message] of cases) expect(() => parseTokens(`\n${line}`.slice(1), "f"), line).toThrow(message);
  });

  it("orders scopes read < write < admin and names the app a token lacks", () => {
    const [read, write, admin] = parseTokens(`read ${T}1 r apps=web\nwrite ${T}2 w\nadmin ${T}3 a`, "f");
    expect([read, write, admin].map((grant) => ["read", "write", "admin"].filter((scope) => hasScope(grant!, scope as "read")))).toEqual([
      ["read"],
      ["read", "write"],
      ["read", "write", "admin"],
    ]);
    expect(appRefusal(read!, ["web", "billing"])).toBe('the token "r" does not cover app "billing" (its apps: web)');
    expect(appRefusal(read!, ["web"])).toBeUndefined();
    expect(appRefusal(write!, ["billing"])).toBeUndefined();
  });
});
