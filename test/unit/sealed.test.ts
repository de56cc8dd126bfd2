// Sealed values: what a key seals opens with it alone, whole; the lines cdp keeps carry a secret
// only sealed; and a value decodes the same sealed or in clear.
import { randomBytes } from "node:crypto";
import { beforeAll, describe, expect, it } from "vitest";
import { isSealed, openSealed, secretsKeyOf, sealedWith } from "../../src/lines/sealed.js";
import { maskLine, sealLine } from "../../src/schemas/sealing.js";
import { loadSchemas, type Schemas } from "../../src/schemas/schemas.js";
import { decodeValue } from "../../src/schemas/validate.js";
import { encodeChange } from "../../src/store/records.js";
import type { KeyInfo } from "../../src/schemas/schemas.js";
import { SCHEMAS } from "../helpers.js";

let schemas: Schemas;
beforeAll(async () => {
  schemas = await loadSchemas(SCHEMAS);
});

describe("sealed values", () => {
  it("open to the text sealed, each time with a fresh nonce, and name their key", () => {
    const key = secretsKeyOf(randomBytes(32));
    for (const text of ["hunter2", "", "ünïcödé 🔑", "x".repeat(10_000), '{"a": [1, 2]}']) {
      const sealed = key.seal(text);
      expect(isSealed(sealed)).toBe(true);
      expect(sealedWith(sealed)).toBe(key.id);
      expect(sealed).not.toContain(text || "\u0000");
      expect(openSealed(sealed)).toEqual({ ok: true, text });
      expect(key.seal(text)).not.toBe(sealed);
    }
  });

  it("refuse to open when altered, cut, or sealed with a key this process was not given", () => {
    const key = secretsKeyOf(randomBytes(32));
    const sealed = key.seal("hunter2-secret");
    const data = sealed.slice(sealed.lastIndexOf(":") + 1);
    const flipped = `${sealed.slice(0, -data.length)}${data[0] === "A" ? "B" : "A"}${data.slice(1)}`;
    expect(openSealed(flipped)).toEqual({ ok: false, reason: `is a sealed value that does not open with key ${key.id}: it was altered` });
    expect(openSealed(sealed.slice(0, -data.length + 4))).toEqual({ ok: false, reason: `is a sealed value that is cut or altered (key ${key.id})` });
    expect(openSealed("!sealed:v1:zz")).toEqual({ ok: false, reason: "is a sealed value that is cut or altered (!sealed:v1:KEYID:DATA)" });
    const unknown = `!sealed:v1:000000000000:${data}`;
    expect(openSealed(unknown)).toMatchObject({ ok: false, reason: expect.stringContaining("is sealed with secrets key 000000000000, and cdp has key") });
    // another key's id names a value it cannot open
    const other = secretsKeyOf(randomBytes(32));
    expect(openSealed(`!sealed:v1:${other.id}:${data}`)).toEqual({
      ok: false,
      reason: `is a sealed value that does not open with key ${other.id}: it was altered`,
    });
  });

  it("decode as the value they hold, and a secret is journaled sealed while the rest stays as it was", () => {
    const key = secretsKeyOf(randomBytes(32));
    const ticker = schemas.get("ticker")!;
    const token = ticker.key(["token"]) as KeyInfo;
    const interval = ticker.key(["interval"]) as KeyInfo;
    expect(decodeValue(key.seal("hunter2-secret"), token)).toEqual({ ok: true, value: "hunter2-secret" });
    expect(decodeValue(` ${key.seal("1500")} `, interval)).toEqual({ ok: true, value: 1500 });
    expect(decodeValue(key.seal("abc"), interval)).toMatchObject({ ok: false });

    const line = encodeChange("ticker", "token", "hunter2-secret", token, key);
    expect(line).toMatch(/^ticker:token:!sealed:v1:[0-9a-f]{12}:/);
    expect(decodeValue(line.slice("ticker:token:".length), token)).toEqual({ ok: true, value: "hunter2-secret" });
    expect(encodeChange("ticker", "interval", 1500, interval, key)).toBe("ticker:interval:1500");
    // a string that only looks sealed is kept as a string
    expect(encodeChange("ticker", "name", "!sealed:v1:abc", ticker.key(["name"]) as KeyInfo)).toBe('ticker:name:"!sealed:v1:abc"');
  });

  it("seal the lines cdp keeps only where they carry a secret, and show them masked", () => {
    const key = secretsKeyOf(randomBytes(32));
    const sealed = sealLine("ticker:token: hunter2-secret", schemas, key);
    expect(sealed).toMatch(/^ticker:token:!sealed:v1:/);
    expect(sealLine(sealed, schemas, key)).toBe(sealed); // never sealed twice
    for (const line of ["ticker:interval:1500", "# a comment", "", "unknown:token:x", "broken line"]) expect(sealLine(line, schemas, key)).toBe(line);
    // a line that does not parse, for an app with secrets: what follows the second ':' may be one
    expect(sealLine("ticker:to ken:hunter2", schemas, key)).toMatch(/^ticker:to ken:!sealed:v1:/);
    expect(sealLine("db:ho st:value", schemas, key)).toBe("db:ho st:value"); // db has no secret
    expect(maskLine("ticker:token:hunter2", schemas)).toBe("ticker:token:[secret]");
    expect(maskLine("ticker:interval:1500", schemas)).toBe("ticker:interval:1500");
  });
});
