// The sidecar's request plumbing on its hot path: a read's path taken without `new URL` when that
// gives the same, the Host check kept for the last host, a path part decoded only when escaped.
import type { IncomingMessage } from "node:http";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { decodePathPart, foreignRequest, HttpError, pathOf, plainPath, URL_BASE } from "../../src/sidecar/http.js";

// targets as a client may send them: any of these parts after a first /
const part = fc.constantFrom("/", "//", ".", "..", "a", "Z", "0", "_", "-", "~", "%", "%2e", "?", "#", "\\", " ", "é", ":", "@", "config");
const target = fc.array(part, { maxLength: 12 }).map((parts) => `/${parts.join("")}`);

describe("plainPath", () => {
  it("is the path of a plain target, up to its query", () => {
    expect(plainPath("/v1/config/ticker")).toBe("/v1/config/ticker");
    expect(plainPath("/v1/config/ticker/a.b_c-d~e?x=1&y=/..")).toBe("/v1/config/ticker/a.b_c-d~e");
    expect(plainPath("/v1/config/.../x")).toBe("/v1/config/.../x");
  });

  it("leaves to new URL what it would resolve or escape: dot segments, escapes, fragments, other forms", () => {
    const resolved = ["/v1/config/../events", "/v1/./config", "/v1/config/..", "/v1/%2e%2e/x"];
    for (const target of [...resolved, "/a b", "/a#b", "/a\\b", "/é", "*", "http://h/v1/config", ""]) expect(plainPath(target), target).toBeUndefined();
  });

  it("never differs from new URL's path (after cdp's origin) when it gives one", () => {
    fc.assert(
      fc.property(target, (text) => {
        const path = plainPath(text);
        return path === undefined || path === new URL(URL_BASE + text).pathname;
      }),
      { numRuns: 5000 },
    );
  });
});

describe("pathOf", () => {
  it("reads a target that names a host as a path (an invalid host ended cdp), and refuses what is not a path", () => {
    expect(pathOf("//a:b")).toBe("//a:b");
    expect(pathOf("//evil.example/v1/config")).toBe("//evil.example/v1/config");
    expect(pathOf("/\\evil.example/v1/config")).toBe("//evil.example/v1/config");
    expect(pathOf("/v1/config/../events?since=1")).toBe("/v1/events");
    for (const target of ["*", "http://h/v1/config", "", "v1/config"]) expect(pathOf(target), target).toBeUndefined();
  });

  it("gives a path for every target that starts with /, and plainPath's wherever that gives one", () => {
    fc.assert(
      fc.property(target, (text) => {
        const path = pathOf(text);
        return path?.startsWith("/") === true && (plainPath(text) === undefined || plainPath(text) === path);
      }),
      { numRuns: 5000 },
    );
  });
});

describe("foreignRequest", () => {
  const request = (host: string | undefined, method = "GET", origin?: string) => ({ headers: { host, origin }, method }) as unknown as IncomingMessage;

  it("answers each host for itself, whichever came before (the last one's answer is kept)", () => {
    const hosts: [string | undefined, boolean][] = [
      ["127.0.0.1:7070", true],
      ["evil.example:7070", false],
      ["evil.example:7070", false],
      ["127.0.0.1:7070", true],
      ["[::1]:80", true],
      ["localhost", true],
      ["127.0.0.1.evil.example", false],
      [undefined, false],
    ];
    for (const [host, loopback] of hosts)
      expect(foreignRequest(request(host), true), String(host)).toBe(loopback ? undefined : `refused: Host "${host ?? ""}" is not a loopback address`);
    expect(foreignRequest(request("evil.example"), false)).toBeUndefined(); // with tokens, any host
  });

  it("refuses a change from another origin", () => {
    expect(foreignRequest(request("127.0.0.1:7070", "POST", "http://evil.example"), true)).toBe("refused: a change from another origin (http://evil.example)");
    expect(foreignRequest(request("127.0.0.1:7070", "POST", "http://127.0.0.1:7070"), true)).toBeUndefined();
  });
});

describe("decodePathPart", () => {
  it("decodes escapes, and says which part is malformed", () => {
    expect(decodePathPart("ticker")).toBe("ticker");
    expect(decodePathPart("tick%65r")).toBe("ticker");
    expect(() => decodePathPart("%E0%A4%A")).toThrow(HttpError);
    expect(() => decodePathPart("%E0%A4%A")).toThrow('malformed percent-escape in the path: "%E0%A4%A"');
  });
});
