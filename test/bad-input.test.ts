// Garbage in, a reason out: random and hostile lines never crash cdp, change a prototype, or
// slip through unrecorded.
import { execFile, spawn } from "node:child_process";
import { appendFile, open, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import { startCdp } from "../src/index.js";
import { linesOf, toInboxLine } from "../src/inbox/inbox.js";
import { encodeChange } from "../src/store/journal.js";
import { parseLine } from "../src/lines/parse.js";
import { judgeLine } from "../src/schemas/validate.js";
import { loadSchemas, type KeyInfo, type Schemas } from "../src/schemas/schemas.js";
import { decodeValue } from "../src/schemas/validate.js";
import { configsOf } from "../src/lines/values.js";
import { afterThisTest, capturedLogger, cdp, CLI, readText, recordLines, SCHEMAS, startWatch, tempDir, waitUntil, dataDir } from "./helpers.js";

let schemas: Schemas;
beforeAll(async () => {
  schemas = await loadSchemas(SCHEMAS);
});

const GRAMMAR_ALPHABET = ["a", "Z", "_", "-", "1", ":", ".", " ", "\t", "#", '"', "{", "[", "\r", "\0", "é", "\uD800"];
const grammarish = fc.array(fc.constantFrom(...GRAMMAR_ALPHABET), { maxLength: 40 }).map((chars) => chars.join(""));
const anyLine = fc.oneof(
  grammarish,
  fc.string({ unit: "binary", maxLength: 200 }),
  grammarish.map((tail) => `ticker:${tail}`),
);

function judge(bytes: Uint8Array) {
  const line = toInboxLine(Buffer.from(bytes), bytes.length, bytes.at(-1), 1, bytes.length + 1, 65536);
  const current = configsOf(new Map([...schemas].map(([app, schema]) => [app, schema.defaults])));
  return judgeLine(line, { schemas, validators: new Map(), current, maxLineBytes: 65536 });
}

describe("random lines (property-based)", () => {
  it("parse to a blank line, a comment, a change or an error with a column on the line", () => {
    fc.assert(
      fc.property(anyLine, (text) => {
        const parsed = parseLine(text);
        expect(["blank", "comment", "change", "error"]).toContain(parsed.kind);
        if (parsed.kind === "error") {
          expect(parsed.column).toBeGreaterThanOrEqual(1);
          expect(parsed.column).toBeLessThanOrEqual(text.length + 1);
          expect(parsed.message).toMatch(/^column \d+: /);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it("are judged without throwing, whatever their bytes, and leave every prototype alone", () => {
    const before = [Object.getOwnPropertyNames(Object.prototype), Object.getOwnPropertyNames(Array.prototype)];
    const bytes = fc.oneof(
      fc.uint8Array({ maxLength: 120 }),
      anyLine.map((text) => new TextEncoder().encode(text)),
      fc
        .tuple(fc.constantFrom("ticker:meta:", "ticker:tags:", "ticker:limits:", "db:pool:"), fc.json())
        .map(([head, json]) => new TextEncoder().encode(head + json)),
    );
    fc.assert(
      fc.property(bytes, (line) => {
        expect(["ignore", "reject", "accept"]).toContain(judge(line).kind);
      }),
      { numRuns: 3000 },
    );
    expect([Object.getOwnPropertyNames(Object.prototype), Object.getOwnPropertyNames(Array.prototype)]).toEqual(before);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it("journal any string or integer value in a form that decodes back to it", () => {
    const name = schemas.get("ticker")!.key(["name"]) as KeyInfo;
    const label = schemas.get("ticker")!.key(["label"]) as KeyInfo;
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: "binary" }), fc.integer()), (value) => {
        for (const [key, info] of [
          ["name", name],
          ["label", label],
        ] as const) {
          if (key === "name" && typeof value !== "string") continue;
          const parsed = parseLine(encodeChange("ticker", key, value, info));
          expect(parsed.kind).toBe("change");
          if (parsed.kind === "change") expect(decodeValue(parsed.valueText, info)).toEqual({ ok: true, value });
        }
      }),
      { numRuns: 2000 },
    );
  });

  it("each land exactly once in the journal or cdp.rej when a running watcher reads them", async () => {
    const dir = await dataDir();
    const lines = fc.sample(fc.oneof(anyLine, fc.constant("ticker:interval:1500"), fc.constant("ticker:name:ok")), { numRuns: 400, seed: 42 });
    const clean = lines.map((line) => line.replace(/\n/g, ""));
    const counted = clean.filter((line) => !["blank", "comment"].includes(parseLine(line.replace(/\r$/, "")).kind)).length;
    const watch = await startWatch(dir);
    await appendFile(join(dir, "cdp.new"), clean.map((line) => `${line}\n`).join(""));
    await waitUntil(async () => (await recordCount(dir)) === counted);
    // every processed line has its own seq, in the journal or in cdp.rej: none twice, none missing
    const seqs = [
      ...(await readText(join(dir, "cdp"))).matchAll(/^# rev=\d+ seq=(\d+) /gm),
      ...(await readText(join(dir, "cdp.rej"))).matchAll(/^# seq=(\d+) /gm),
    ]
      .map((match) => Number(match[1]))
      .sort((a, b) => a - b);
    expect(seqs).toEqual(Array.from({ length: counted }, (_, i) => i + 1));
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);
  });
});

async function recordCount(dir: string): Promise<number> {
  return (await recordLines(join(dir, "cdp"))).length + ((await readText(join(dir, "cdp.rej"))).match(/^# seq=/gm) ?? []).length;
}

const DEEP_ARRAY = "an array nested 30,000 deep";
const DEEP_OBJECT = "an object nested 65 deep";

describe("hostile lines (named cases)", () => {
  it.each([
    ['ticker:interval:"1500"', "ticker.interval must be an integer"],
    ["ticker:interval:true", "ticker.interval must be an integer"],
    ["ticker:interval:null", "ticker.interval must be an integer"],
    ["ticker:interval:[1500]", "ticker.interval must be an integer"],
    ["ticker:enabled:1", "ticker.enabled must be true or false"],
    ['ticker:enabled:"true"', "ticker.enabled must be true or false"],
    ['ticker:tags:"a"', "ticker.tags must be a JSON array"],
    ["ticker:ratio:NaN", "ticker.ratio must be a number"],
    ["ticker:ratio:0x10", "ticker.ratio must be a number"],
    ["../etc:passwd:1", "column 1: expected an app name"],
    ["ticker:../x:1", "column 8: expected a key name"],
    ["__proto__:polluted:1", `unknown app "__proto__"`],
    ["constructor:x:1", `unknown app "constructor"`],
    ["ticker:__proto__:1", `ticker has no key "__proto__"`],
    ["ticker:prototype.x:1", `ticker has no key "prototype"`],
    ["ticker:constructor:1", `ticker has no key "constructor"`],
    ["ticker:meta.__proto__:1", `ticker.meta has no key "__proto__"`],
    ['ticker:limits:{"__proto__": {"polluted": true}}', `ticker.limits has no key "__proto__"`],
    [DEEP_ARRAY, "ticker.tags is nested deeper than 64 levels"],
    [DEEP_OBJECT, "ticker.meta is nested deeper than 64 levels"],
    ["\0ticker:interval:1500", "column 1: expected an app name"],
    ['ticker:name:"\\ud800"', "ticker.name holds a string that is not valid Unicode"],
    ['ticker:tags:["ok", "\\udc00x"]', "ticker.tags holds a string that is not valid Unicode"],
    ['ticker:meta:{"\\ud83d": 1}', "ticker.meta holds a name that is not valid Unicode"],
    ["ticker:label:9007199254740993", "ticker.label holds a whole number beyond ±9007199254740991"],
    ['ticker:limits:{"min": -9007199254740993}', "ticker.limits holds a whole number beyond ±9007199254740991"],
    ["ticker:ratio:1e400", "ticker.ratio holds a number too large to represent"],
    ["ticker:name:cr1\rticker:name:cr2\rticker:name:later", "column 16: a carriage return (\\r) may only end a line"],
    ["# a comment\rticker:name:hidden", "column 12: a carriage return"],
  ])("rejects %s where coercion or a lookup by name could surprise: %s", (name, reason) => {
    const line =
      name === DEEP_ARRAY
        ? `ticker:tags:${"[".repeat(30_000)}${"]".repeat(30_000)}`
        : name === DEEP_OBJECT
          ? `ticker:meta:${'{"a":'.repeat(65)}1${"}".repeat(65)}`
          : name;
    const verdict = judge(new TextEncoder().encode(line));
    expect(verdict).toMatchObject({ kind: "reject", reason: expect.stringContaining(reason) });
  });

  it("keeps values that are exact: a surrogate pair, the largest exact integers, a large float", () => {
    expect(judge(new TextEncoder().encode('ticker:name:"\\ud83d\\ude00"'))).toMatchObject({ kind: "accept", change: { value: "\u{1F600}" } });
    expect(judge(new TextEncoder().encode("ticker:label:9007199254740991"))).toMatchObject({ kind: "accept", change: { value: 9007199254740991 } });
    expect(judge(new TextEncoder().encode("ticker:ratio:1.5e300"))).toMatchObject({ kind: "reject" }); // whole: cannot be told from its neighbours
    expect(judge(new TextEncoder().encode("ticker:ratio:1.5e-300"))).toMatchObject({ kind: "accept", change: { value: 1.5e-300 } });
  });

  it("measures a line's length without its CRLF: exactly the limit is accepted, one byte more is not", () => {
    const limit = 100;
    const text = (length: number) => `ticker:name:${"x".repeat(length - 12)}`;
    const lineOf = (bytes: string) => toInboxLine(Buffer.from(bytes), bytes.length, bytes.charCodeAt(bytes.length - 1), 1, bytes.length + 1, limit);
    expect(lineOf(`${text(100)}\r`)).toMatchObject({ text: text(100) });
    expect(lineOf(`${text(100)}\r`).tooLong).toBeUndefined();
    expect(lineOf(`${text(101)}\r`)).toMatchObject({ tooLong: 101 });
    expect(linesOf(Buffer.from(`${text(100)}\r\n${text(101)}\r\n`), limit).map((line) => line.tooLong)).toEqual([undefined, 101]);
  });

  it("decodes what the contract says, not what a coercing validator would", () => {
    expect(judge(new TextEncoder().encode("ticker:name:1500"))).toMatchObject({ kind: "accept", change: { value: "1500" } });
    expect(judge(new TextEncoder().encode('ticker:name:["a"]'))).toMatchObject({ kind: "accept", change: { value: '["a"]' } });
    expect(judge(new TextEncoder().encode("ticker:interval:1.5e3"))).toMatchObject({ kind: "accept", change: { value: 1500 } });
    expect(judge(new TextEncoder().encode("ticker:name:a\0b"))).toMatchObject({ kind: "accept", change: { value: "a\0b" } });
    expect(judge(Uint8Array.from([...new TextEncoder().encode("ticker:name:"), 0xff, 0xfe]))).toEqual({ kind: "reject", reason: "line is not valid UTF-8" });
  });

  it("keeps __proto__ inside a free-form value a plain key, end to end", async () => {
    const dir = await dataDir();
    const { logger } = capturedLogger();
    const cdp = await startCdp({ init: true, dir, schemas: SCHEMAS, logger });
    try {
      await appendFile(join(dir, "cdp.new"), 'ticker:meta:{"__proto__": {"polluted": true}, "constructor": {"prototype": {"polluted": true}}}\n');
      await waitUntil(() => cdp.revision === 1);
      const meta = cdp.get("ticker", "meta") as Record<string, unknown>;
      expect(Object.getPrototypeOf(meta)).toBe(Object.prototype);
      expect(Object.keys(meta)).toEqual(["__proto__", "constructor"]);
      expect(({} as Record<string, unknown>).polluted).toBeUndefined();
      expect(Object.getOwnPropertyNames(Object.prototype)).not.toContain("polluted");
    } finally {
      await cdp.stop();
    }
    expect((await readFile(join(dir, "cdp"), "utf8")).split("\n")[1]).toBe(
      'ticker:meta:{"__proto__":{"polluted":true},"constructor":{"prototype":{"polluted":true}}}',
    );
  });

  it("journals a burst of 20,000 new keys in one app in bounded memory (it held a whole config per line: 4 GB, then out of heap)", async () => {
    const schemas = await tempDir();
    await writeFile(join(schemas, "flags.schema.json"), JSON.stringify({ type: "object", additionalProperties: { type: "integer" } }));
    const dir = await dataDir(schemas);
    await writeFile(join(dir, "cdp.new"), Array.from({ length: 20_000 }, (_, i) => `flags:k${i}:${i}\n`).join(""));
    // a heap of 100 MB: judging the batch holds what it changes, not a config per line
    const child = spawn(process.execPath, ["--max-old-space-size=100", CLI, "watch", "--dir", dir, "--schemas", schemas], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (data: Buffer) => (output += data.toString()));
    child.stderr.on("data", (data: Buffer) => (output += data.toString()));
    afterThisTest(async () => {
      if (child.exitCode === null) child.kill("SIGKILL");
    });
    await waitUntil(async () => child.exitCode !== null || (await recordLines(join(dir, "cdp"))).length === 20_000, 60_000);
    expect(output).not.toContain("heap out of memory");
    expect(child.exitCode).toBe(null);
    expect(await recordLines(join(dir, "cdp"))).toHaveLength(20_000);
  }, 120_000);

  it("rejects a 200 MB line once, cut short, without holding it in memory", async () => {
    const dir = await dataDir();
    const watch = await startWatch(dir, ["--poll-interval", "100"]);
    const inbox = await open(join(dir, "cdp.new"), "a");
    const piece = Buffer.alloc(1 << 20, "x");
    await inbox.write("ticker:name:");
    for (let i = 0; i < 200; i++) await inbox.write(piece);
    await inbox.write("\nticker:interval:1500\n");
    await inbox.close();
    await waitUntil(async () => (await recordLines(join(dir, "cdp"))).length === 1, 60_000);
    const rejects = await readText(join(dir, "cdp.rej"));
    expect(rejects.match(/^# seq=/gm)).toHaveLength(1);
    expect(rejects).toContain(`length=${200 * (1 << 20) + 12} reason: line is ${200 * (1 << 20) + 12} bytes, over the limit of 65536\n`);
    expect(rejects.split("\n")[1]).toHaveLength(65536);
    const status = await readFile(`/proc/${watch.child.pid}/status`, "utf8");
    const peakKb = Number(/VmHWM:\s+(\d+) kB/.exec(status)![1]);
    expect(peakKb).toBeLessThan(150 * 1024); // far below the line's 200 MB
    watch.child.kill("SIGTERM");
  }, 90_000);
});

describe("secrets and permissions", () => {
  it("never shows a secret (writeOnly) value in logs, reasons or error messages", async () => {
    const dir = await dataDir();
    const watch = await startWatch(dir, ["--log-level", "trace"]);
    await appendFile(join(dir, "cdp.new"), "ticker:token:s3cr\nticker:token:hunter2hunter2\n");
    await waitUntil(async () => (await recordLines(join(dir, "cdp"))).length === 1);
    watch.child.kill("SIGTERM");
    await watch.exited;
    expect(watch.output()).not.toContain("s3cr");
    expect(watch.output()).not.toContain("hunter2");
    const rejects = await readText(join(dir, "cdp.rej"));
    expect(rejects).toContain("reason: ticker.token must NOT have fewer than 8 characters (value hidden: secret key)\nticker:token:s3cr\n");
    expect(await recordLines(join(dir, "cdp"))).toEqual(["ticker:token:hunter2hunter2"]); // the journal keeps it

    const checked = await cdp(["check", "--schemas", SCHEMAS, "-"], "ticker:token:s3cr\n");
    expect(checked.output).not.toContain("s3cr");
    await appendFile(join(dir, "cdp"), "ticker:token:x1\n");
    const started = await cdp(["watch", "--dir", dir, "--schemas", SCHEMAS]);
    expect(started.code).toBe(2);
    expect(started.output).toContain("ticker.token must NOT have fewer than 8 characters (value hidden: secret key)");
    expect(started.output).not.toContain("x1");
  });

  it("warns when anyone can write the inbox, or a group the data directory; a group-writable inbox is the way to let operators in", async () => {
    const dir = await dataDir();
    await writeFile(join(dir, "cdp.new"), "");
    await promisify(execFile)("chmod", ["0770", dir]);
    await promisify(execFile)("chmod", ["0660", join(dir, "cdp.new")]);
    let watch = await startWatch(dir);
    expect(watch.output()).toContain(`${dir} is writable by group or others (mode 770): whoever can write there can change the configuration`);
    expect(watch.output()).not.toContain(`${join(dir, "cdp.new")} is writable`);
    watch.child.kill("SIGTERM");
    await watch.exited;
    await promisify(execFile)("chmod", ["0700", dir]);
    await promisify(execFile)("chmod", ["0666", join(dir, "cdp.new")]);
    watch = await startWatch(dir);
    expect(watch.output()).toContain(`${join(dir, "cdp.new")} is writable by anyone (mode 666)`);
    expect(watch.output()).not.toContain(`${dir} is writable`);
    watch.child.kill("SIGTERM");
  });
});

describe("lines read from the inbox file", () => {
  it("are what the byte-by-byte reading gives: a CR before the newline, bad UTF-8, a written U+FFFD, a cut-short mark, a long or empty line", async () => {
    const { TailedFile, CUT_SHORT } = await import("../src/inbox/tail.js");
    const { open } = await import("node:fs/promises");
    const { createHash } = await import("node:crypto");
    const dir = await tempDir();
    const path = join(dir, "cdp.new");
    const limit = 40;
    const parts = [
      Buffer.from("ticker:name:plain\n"),
      Buffer.from("ticker:name:crlf\r\n"),
      Buffer.concat([Buffer.from("ticker:name:"), Buffer.from([0xff, 0xfe]), Buffer.from("\n")]),
      Buffer.from("ticker:name:\uFFFD written\n"),
      Buffer.concat([Buffer.from("ticker:name:cut"), Buffer.from([CUT_SHORT]), Buffer.from("\n")]),
      Buffer.from(`ticker:name:${"x".repeat(60)}\n`),
      Buffer.from("\n"),
      Buffer.from("ticker:name:é ü\n"),
    ];
    const bytes = Buffer.concat(parts);
    await writeFile(path, bytes);
    const handle = await open(path, "r");
    const file = { name: "cdp.new", path, id: "test", size: bytes.length, modifiedNs: 0n };
    const tailed = new TailedFile({ file, handle, hash: createHash("sha256"), offset: 0 }, 0, limit);
    try {
      const read = tailed.readLines();
      expect(Array.isArray(read)).toBe(true);
      const strip = (lines: ReturnType<typeof linesOf>) => lines.map(({ check: _check, ...line }) => line);
      expect(strip(read as ReturnType<typeof linesOf>)).toEqual(strip(linesOf(bytes, limit)));
      expect((read as ReturnType<typeof linesOf>).map((line) => [line.notUtf8, line.cutShort, line.tooLong])).toEqual([
        [undefined, undefined, undefined],
        [undefined, undefined, undefined],
        [true, undefined, undefined],
        [undefined, undefined, undefined],
        [undefined, true, undefined],
        [undefined, undefined, 72],
        [undefined, undefined, undefined],
        [undefined, undefined, undefined],
      ]);
    } finally {
      await tailed.close();
    }
  });
});
