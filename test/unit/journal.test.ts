import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { changeRecord, encodeChange, markerRecord, openJournal, positionRecord, replayJournal } from "../../src/store/journal.js";
import { parseLine } from "../../src/lines/parse.js";
import { openRejects, rejectionRecord } from "../../src/store/rejects.js";
import { loadSchemas, type KeyInfo, type Schemas } from "../../src/schemas/schemas.js";
import { decodeValue } from "../../src/schemas/validate.js";
import { SCHEMAS, tempDir } from "../helpers.js";

let schemas: Schemas;
beforeAll(async () => {
  schemas = await loadSchemas(SCHEMAS);
});

async function journalWith(text: string): Promise<string> {
  const path = join(await tempDir(), "cdp");
  await writeFile(path, text);
  return path;
}

const commit = (seq: number, offset: number, line: number) => ({
  seq,
  time: "2026-11-24T00:00:00.000Z",
  source: `cdp.new:${line}`,
  position: { file: "7-9", offset, line },
});

describe("replaying the journal", () => {
  it("reads a hand-written bootstrap config, comments, blank lines and a missing final newline", async () => {
    const path = await journalWith("# bootstrap\n\nticker:interval:2000\r\ndb:pool.max:20\nticker:name:  007 ");
    const state = await replayJournal(path, schemas);
    expect(state.apps.get("ticker")).toEqual({ interval: 2000, name: "007", enabled: true });
    expect(state.apps.get("db")).toEqual({ host: "localhost", pool: { min: 1, max: 20 } });
    expect(state.revision).toBe(3);
    expect(state.position).toBeUndefined();
    expect(state.unterminated).toBe(true);
  });

  it("starts from the schema defaults when there is no journal", async () => {
    const state = await replayJournal(join(await tempDir(), "cdp"), schemas);
    expect(state.apps.get("ticker")).toEqual({ interval: 1000, name: "tick", enabled: true });
    expect(state).toMatchObject({ revision: 0, seq: 0, position: undefined });
  });

  it("takes revisions, sequence and inbox position from cdp's own records", async () => {
    const text =
      changeRecord(commit(4, 100, 5), 7, "ticker:interval:1500") + positionRecord(commit(6, 140, 7)) + changeRecord(commit(9, 200, 10), 8, "ticker:name:x");
    const state = await replayJournal(await journalWith(text), schemas);
    expect(state).toMatchObject({ revision: 8, seq: 9, position: { file: "7-9", offset: 200, line: 10 } });
    expect(state.apps.get("ticker")).toMatchObject({ interval: 1500, name: "x" });
  });

  it("takes the inbox position from whichever record came last, a change's or a marker's, with and without history", async () => {
    const marked = (seq: number, offset: number, line: number) => markerRecord({ ...commit(seq, offset, line), marker: "rollout:r1:s1:ticker" }, 9);
    const changeLast = positionRecord(commit(2, 40, 3)) + marked(3, 60, 4) + changeRecord(commit(4, 80, 5), 10, "ticker:interval:1500");
    const markerLast = changeRecord(commit(1, 20, 1), 1, "ticker:interval:1500") + changeRecord(commit(2, 40, 2), 2, "ticker:name:x") + marked(3, 60, 3);
    for (const history of [false, true]) {
      expect(await replayJournal(await journalWith(changeLast), schemas, { history })).toMatchObject({
        revision: 10,
        seq: 4,
        position: { offset: 80, line: 5 },
      });
      expect(await replayJournal(await journalWith(markerLast), schemas, { history })).toMatchObject({
        revision: 9,
        seq: 3,
        position: { offset: 60, line: 3 },
      });
    }
  });

  it.each([
    ["ticker:interval:1500\nbroken\n", ":2: column 7: expected ':'"],
    ["nope:x:1\n", `:1: unknown app "nope"`],
    ["ticker:nope:1\n", `:1: ticker has no key "nope"`],
    ["ticker:interval:abc\n", ":1: ticker.interval must be an integer"],
    ["ticker:interval:100\nticker:name:x\n", ":1: ticker.interval must be > 200, got 100"],
    ["ticker:interval:9000\n# later\nticker:mode:fast\n", ":1: ticker.interval must be <= 5000, got 9000"],
    // the line that set the key last, counted as the file's lines (comments, CRLF, an unterminated last line)
    ["ticker:interval:9000\r\n# ticker:interval:300\r\n\r\nticker:interval:7000\r\nticker:mode:fast", ":4: ticker.interval must be <= 5000, got 7000"],
    ["ticker:mode:fast\nticker:interval:6000", ":2: ticker.interval must be <= 5000, got 6000"],
  ])("refuses an invalid journal %j, saying file:line and why", async (text, message) => {
    const path = await journalWith(text);
    await expect(replayJournal(path, schemas)).rejects.toMatchObject({ code: "bootstrap", message: expect.stringContaining(`${path}${message}`) });
  });

  it("checks the whole config after replay, so a cross-field rule only has to hold at the end", async () => {
    const path = await journalWith("ticker:mode:fast\nticker:interval:9000\nticker:interval:3000\n");
    const state = await replayJournal(path, schemas);
    expect(state.apps.get("ticker")).toMatchObject({ mode: "fast", interval: 3000 });
  });

  it("runs the apps' validators on the replayed config", async () => {
    const path = await journalWith("ticker:name:boom\n");
    const validators = new Map([["ticker", [(config: { name?: unknown }) => (config.name === "boom" ? "boom is reserved" : undefined)]]]);
    await expect(replayJournal(path, schemas, { validators })).rejects.toMatchObject({ message: `${path}: ticker refused by its validator: boom is reserved` });
  });

  it("cuts off a record that a crash left torn, and appends after the valid part", async () => {
    const whole = changeRecord(commit(1, 21, 1), 1, "ticker:interval:1500");
    const torn = changeRecord(commit(2, 42, 2), 2, "ticker:interval:2500").slice(0, -3);
    const path = await journalWith(whole + torn);
    const state = await replayJournal(path, schemas);
    expect(state).toMatchObject({ revision: 1, seq: 1, torn: torn, length: Buffer.byteLength(whole) });
    expect(state.apps.get("ticker")).toMatchObject({ interval: 1500 });
    const journal = await openJournal(path, state);
    await journal.appendDurably(changeRecord(commit(2, 42, 2), 2, "ticker:interval:2500"));
    await journal.close();
    expect((await replayJournal(path, schemas)).apps.get("ticker")).toMatchObject({ interval: 2500 });
    expect(await readFile(`${path}.torn`, "utf8")).toMatch(new RegExp(`^# cut from ${path} at byte ${Buffer.byteLength(whole)} on \\S+\\n`));
    expect(await readFile(`${path}.torn`, "utf8")).toContain(`${torn}\n`);
  });

  it.each([["# rev=2 seq=2 time=2026-11-24T00:00:00.000Z sour"], ["# rev=2 se"], ["#"]])(
    "takes a cut-short metadata comment %j for a torn record, not for a commit",
    async (torn) => {
      const whole = changeRecord(commit(1, 21, 1), 1, "ticker:interval:1500");
      const state = await replayJournal(await journalWith(whole + torn), schemas);
      expect(state).toMatchObject({ revision: 1, seq: 1, torn, length: Buffer.byteLength(whole), position: { offset: 21 } });
    },
  );

  it("ends a hand-written last line before appending to it", async () => {
    const path = await journalWith("ticker:interval:2000");
    const journal = await openJournal(path, await replayJournal(path, schemas));
    await journal.appendDurably(changeRecord(commit(1, 10, 1), 2, "ticker:name:x"));
    await journal.close();
    expect((await readFile(path, "utf8")).split("\n")[0]).toBe("ticker:interval:2000");
  });
});

describe("encoding a change for the journal", () => {
  const info = (app: string, key: string) => schemas.get(app)!.key(key.split(".")) as KeyInfo;
  it.each([
    ["ticker", "name", "007", "ticker:name:007"],
    ["ticker", "name", "  padded", 'ticker:name:"  padded"'],
    ["ticker", "name", "", 'ticker:name:""'],
    ["ticker", "name", '"quoted"', 'ticker:name:"\\"quoted\\""'],
    ["ticker", "name", "two\nlines", 'ticker:name:"two\\nlines"'],
    ["ticker", "label", "12", 'ticker:label:"12"'],
    ["ticker", "label", 12, "ticker:label:12"],
    ["ticker", "tags", ["a", "b"], 'ticker:tags:["a","b"]'],
  ])("writes %s.%s = %j as a line that decodes back to it", (app, key, value, line) => {
    expect(encodeChange(app, key, value, info(app, key))).toBe(line);
    const parsed = parseLine(line);
    expect(parsed.kind).toBe("change");
    if (parsed.kind === "change") expect(decodeValue(parsed.valueText, info(app, key))).toEqual({ ok: true, value });
  });
});

describe("cdp.rej", () => {
  const rejection = (seq: number, text = `bad line ${seq}`) => rejectionRecord({ seq, time: "t", source: `cdp.new:${seq}`, reason: `reason ${seq}`, text });

  it("records the time, the source, the reason and the verbatim line", () => {
    expect(
      rejectionRecord({
        seq: 3,
        time: "2026-11-24T00:00:00.000Z",
        source: "cdp.new:3",
        reason: "ticker.interval must be > 200, got 100",
        text: "ticker:interval:100",
      }),
    ).toBe("# seq=3 time=2026-11-24T00:00:00.000Z source=cdp.new:3 reason: ticker.interval must be > 200, got 100\nticker:interval:100\n");
    expect(rejectionRecord({ seq: 4, time: "t", source: "cdp.new:4", reason: "too long", text: "xxxx", fullLength: 70000 })).toBe(
      "# seq=4 time=t source=cdp.new:4 length=70000 reason: too long\nxxxx\n",
    );
  });

  it("drops the records of a batch the journal never committed, and a torn last record", async () => {
    const path = join(await tempDir(), "cdp.rej");
    const committed = rejection(1) + rejection(2, "# seq=99 looks like a header but is a rejected line");
    await writeFile(path, `${committed + rejection(3) + rejection(4)}# seq=5 tim`);
    const file = await openRejects(path, 2);
    await file.appendDurably(rejection(3));
    await file.close();
    expect(await readFile(path, "utf8")).toBe(committed + rejection(3));
  });

  it("keeps every record when all are committed", async () => {
    const path = join(await tempDir(), "cdp.rej");
    await writeFile(path, rejection(1) + rejection(2));
    await (await openRejects(path, 2)).close();
    expect(await readFile(path, "utf8")).toBe(rejection(1) + rejection(2));
  });
});
