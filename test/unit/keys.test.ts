// What a key path means in a schema: its value's types, whether it is or holds a secret, or why
// there is no such key — followed through properties, patterns, additionalProperties, $ref and allOf.
import { describe, expect, it } from "vitest";
import { keyLookup } from "../../src/schemas/keys.js";

const SCHEMA = {
  type: "object",
  $defs: { credentials: { type: "object", properties: { user: { type: "string" }, password: { type: "string", writeOnly: true } } } },
  properties: {
    interval: { type: "integer" },
    db: { $ref: "#/$defs/credentials" },
    token: { type: "string", writeOnly: true },
    vault: { type: "object", writeOnly: true, properties: { key: { type: "string" } } },
    both: { allOf: [{ properties: { a: { type: "number" } } }, { properties: { b: { type: ["string", "null"] } } }] },
  },
  patternProperties: { "^limit_[a-z]+$": { type: "integer" } },
  additionalProperties: false,
};

describe("a key in a schema", () => {
  const key = keyLookup(SCHEMA);

  it("takes the types its schema gives, through $ref, allOf and patterns", () => {
    expect(key(["interval"])).toEqual({ types: new Set(["integer"]), secret: false, writeOnly: false });
    expect(key(["db", "user"])).toEqual({ types: new Set(["string"]), secret: false, writeOnly: false });
    expect(key(["both", "b"])).toMatchObject({ types: new Set(["string", "null"]) });
    expect(key(["limit_eu"])).toMatchObject({ types: new Set(["integer"]) });
  });

  it("is a secret where it is writeOnly, holds one below it, or sits under one", () => {
    expect(key(["token"])).toMatchObject({ secret: true, writeOnly: true });
    expect(key(["db"])).toMatchObject({ secret: true, writeOnly: false }); // holds db.password
    expect(key(["db", "password"])).toMatchObject({ secret: true, writeOnly: true });
    expect(key(["vault", "key"])).toMatchObject({ secret: true, writeOnly: true });
  });

  it("says why there is no such key, naming the keys there are", () => {
    expect(key(["nope"])).toBe(' has no key "nope" (it has interval, db, token, vault, both)');
    expect(key(["db", "host"])).toBe('.db has no key "host" (it has user, password)');
    expect(key(["limit_EU"])).toMatch(/has no key "limit_EU"/);
  });
});

describe("a key of a map (additionalProperties, no patterns)", () => {
  const key = keyLookup({
    type: "object",
    properties: { token: { type: "string", writeOnly: true }, name: { type: "string" } },
    additionalProperties: { type: "integer" },
  });

  it("tells the named keys from the map's, in any order and again", () => {
    for (let round = 0; round < 3; round++) {
      expect(key([`k${round}`])).toEqual({ types: new Set(["integer"]), secret: false, writeOnly: false });
      expect(key(["token"])).toMatchObject({ types: new Set(["string"]), secret: true, writeOnly: true });
      expect(key(["name"])).toEqual({ types: new Set(["string"]), secret: false, writeOnly: false });
      expect(key(["__proto__"])).toMatchObject({ types: new Set(["integer"]) });
      expect(key(["k1", "below"])).toMatch(/has no key "below"/);
    }
  });

  it("refuses every unnamed key where the map allows none", () => {
    const closed = keyLookup({ type: "object", properties: { a: { type: "integer" } }, additionalProperties: false });
    for (let round = 0; round < 2; round++) expect(closed(["b"])).toBe(' has no key "b" (it has a)');
    expect(closed(["a"])).toMatchObject({ types: new Set(["integer"]) });
  });
});
