import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { parseLine, parseWithGrammar } from "../../src/lines/parse.js";

describe("the line grammar", () => {
  it.each([
    ["", { kind: "blank" }],
    ["   \t ", { kind: "blank" }],
    ["# a comment: with colons", { kind: "comment", text: "# a comment: with colons" }],
    ["   # an indented comment", { kind: "comment", text: "   # an indented comment" }],
  ])("reads %j as blank or comment", (line, expected) => {
    expect(parseLine(line)).toEqual(expected);
  });

  it.each([
    ["ticker:interval:1500", "ticker", "interval", ["interval"], "1500"],
    ["db:pool.max:20", "db", "pool.max", ["pool", "max"], "20"],
    ["a:b.c.d: x:y ", "a", "b.c.d", ["b", "c", "d"], " x:y "],
    ["url_map:base-url:http://host:8080/x", "url_map", "base-url", ["base-url"], "http://host:8080/x"],
    ["_a-1:_k-2:", "_a-1", "_k-2", ["_k-2"], ""],
    ["app:key:#not a comment", "app", "key", ["key"], "#not a comment"],
  ])("reads %j as a change", (line, app, key, path, valueText) => {
    expect(parseLine(line)).toEqual({ kind: "change", app, key, path, valueText });
  });

  it.each([
    ["broken", 7, "expected ':', found end of line (a change is app:key:value)"],
    ["ticker:", 8, "expected a key name, found end of line (a change is app:key:value)"],
    ["ticker:interval", 16, "expected ':' or '.', found end of line (a change is app:key:value)"],
    ["tick er:x:1", 5, `expected ':', found " "`],
    ["ticker:inter val:1", 13, `expected ':' or '.', found " "`],
    ["  ticker:x:1", 3, `a change must start at column 1, found "t" after leading spaces`],
    ["ticker:.x:1", 8, `expected a key name, found "."`],
    ["ticker::1", 8, `expected a key name, found ":"`],
    ["a:b.:1", 5, `expected a key name, found ":"`],
    ["1ticker:x:1", 1, `expected an app name (a letter or '_', then letters, digits, '_' or '-'), found "1"`],
    ["é:x:1", 1, `expected an app name (a letter or '_', then letters, digits, '_' or '-'), found "é"`],
    [":x:1", 1, `expected an app name (a letter or '_', then letters, digits, '_' or '-'), found ":"`],
  ])("rejects %j at column %i", (line, column, message) => {
    expect(parseLine(line)).toEqual({ kind: "error", column, message: `column ${column}: ${message}` });
  });

  it("accepts identifiers of 64 characters and refuses longer ones", () => {
    const name = "a".repeat(64);
    expect(parseLine(`${name}:${name}:1`)).toMatchObject({ kind: "change", app: name, key: name });
    expect(parseLine(`${name}x:k:1`)).toMatchObject({ kind: "error", column: 1, message: expect.stringContaining("app name") });
    expect(parseLine(`a:k.${name}x:1`)).toMatchObject({ kind: "error", column: 5, message: expect.stringContaining("key name") });
  });

  it("accepts keys of 32 segments and refuses more", () => {
    const key = Array.from({ length: 32 }, (_, i) => `k${i}`).join(".");
    expect(parseLine(`a:${key}:1`)).toMatchObject({ kind: "change", path: key.split(".") });
    expect(parseLine(`a:${key}.k32:1`)).toEqual({
      kind: "error",
      column: 3 + key.length,
      message: `column ${3 + key.length}: a key may have at most 32 segments`,
    });
    expect(parseLine(`a:${key}.k32`)).toMatchObject({ kind: "error", message: expect.stringContaining("at most 32 segments") });
    expect(parseLine(`a:b:${"x.".repeat(100)}`)).toMatchObject({ kind: "change", key: "b" });
    expect(parseLine(`# a:${"x.".repeat(100)}`)).toMatchObject({ kind: "comment" });
  });

  it("names a newline inside a line (text from HTTP or a rollout, never from an inbox) as such", () => {
    for (const text of ["ticker:name:a\nb", "ticker:interval:1500\n"]) {
      expect(parseLine(text)).toEqual({
        kind: "error",
        column: text.indexOf("\n") + 1,
        message: `column ${text.indexOf("\n") + 1}: a newline (\\n) ends a line: a change is one line, give each on its own`,
      });
    }
  });

  it("reads a 1 MB value as one value (the lexer keeps it one token)", () => {
    const value = "x:".repeat(1 << 19);
    expect(parseLine(`app:key:${value}`)).toMatchObject({ kind: "change", valueText: value });
  });
});

describe("the fast path for common lines", () => {
  const alphabet = ["a", "Z", "_", "-", "1", ":", ".", " ", "\t", "#", '"', "\r", "\n", "é", "\0"];
  const shaped = fc.array(fc.constantFrom(...alphabet), { maxLength: 30 }).map((chars) => chars.join(""));
  const long = fc.tuple(fc.constantFrom("a", "a.b", "a".repeat(64), "a".repeat(65)), fc.integer({ min: 0, max: 40 })).map(
    ([part, n]) =>
      `app:${Array(n + 1)
        .fill(part)
        .join(".")}:1`,
  );

  it("agrees with the nearley grammar on arbitrary input", () => {
    fc.assert(
      fc.property(fc.oneof(shaped, long, fc.string({ unit: "binary", maxLength: 80 })), (text) => {
        expect(parseLine(text)).toEqual(parseWithGrammar(text));
      }),
      { numRuns: 20_000 },
    );
  });
});
