// The dashboard at GET /, driven end to end in headless Chromium (Debian's chromium package,
// installed by .ci/run) through playwright-core.
import { appendFile, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { chromium, type Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startCdp } from "../src/index.js";
import { startEtcd } from "./etcd.js";
import { afterThisTest, capturedLogger, SCHEMAS, tempDir, dataDir } from "./helpers.js";

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
// as root Chromium needs --no-sandbox; the rest keep it from calling out of this closed network
const FLAGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const TOKEN = "dashboard-admin-token-0123456789";

let browser: Browser;
beforeAll(async () => {
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
});
afterAll(async () => {
  await browser?.close();
});

describe("the dashboard", () => {
  it("shows the live table, takes a token, submits accepted and rejected lines and shows history and rejections", async () => {
    const dir = await dataDir();
    const tokens = join(await tempDir(), "tokens");
    await writeFile(tokens, `admin ${TOKEN} alice\n`, { mode: 0o600 });
    const { logger } = capturedLogger();
    const cdp = await startCdp({ init: true, dir, schemas: SCHEMAS, logger, http: { listen: "127.0.0.1:0", tokenFile: tokens } });
    afterThisTest(() => cdp.stop());
    const page = await browser.newPage();
    afterThisTest(() => page.close());

    await page.goto(cdp.url!);
    await expect.poll(() => page.textContent("#status")).toBe("a token is needed: enter one above");
    await page.fill("#token", TOKEN);
    await page.click("text=Use token");
    await expect.poll(() => page.textContent("#status")).toBe("live");
    const cell = (key: string) => page.textContent(`tr[data-key="${key}"] td.value`);
    expect(await cell("ticker.interval")).toBe("1000");

    await page.fill("#line", "ticker:interval:1500");
    await page.click("#submit");
    await expect.poll(() => page.textContent("#result")).toBe("accepted at revision 1");
    await expect.poll(() => cell("ticker.interval")).toBe("1500");
    await expect.poll(() => page.textContent("#revision")).toBe("1");
    await expect.poll(() => page.textContent("#history tbody tr:first-child")).toContain("1000 → 1500");
    expect(await page.textContent("#history tbody tr:first-child")).toContain("alice"); // who made it: the token's name
    expect(await page.textContent("#history tbody tr:first-child td:nth-child(2)")).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/); // the date too

    await page.fill("#line", "ticker:interval:100");
    await page.click("#submit");
    await expect.poll(() => page.textContent("#result")).toBe("rejected: ticker.interval must be > 200, got 100");
    await expect.poll(() => page.textContent("#rejections tbody tr:first-child")).toContain("ticker.interval must be > 200, got 100");
    expect(await cell("ticker.interval")).toBe("1500");

    // a change from elsewhere (an operator's echo >>) arrives over the event stream
    await appendFile(join(dir, "cdp.new"), "db:host:db.example.org\n");
    await expect.poll(() => cell("db.host")).toBe('"db.example.org"');
    expect(await page.textContent("#revision")).toBe("2");
    expect(cdp.get("ticker", "interval")).toBe(1500);

    // the hosts: this one, at the revision it serves
    await expect.poll(() => page.textContent("#hosts tbody tr td:nth-child(2)")).toBe("2");
    expect(await page.textContent("#hosts tbody tr td:nth-child(3)")).toBe("ready");

    // the last hour, drawn: changes up, rejections down
    await expect
      .poll(() => page.textContent("#timeline-summary"))
      .toBe("2 changes and 1 rejections in the last hour (per minute: changes up, rejections down)");
    expect(await page.locator("#timeline rect.change").count()).toBeGreaterThan(0);
    expect(await page.locator("#timeline rect.rejection").count()).toBe(1);

    // a rollback is previewed before it is submitted
    await page.fill("#rollback-to", "1");
    await page.click("#rollback-preview");
    await expect.poll(() => page.textContent("#rollback-result")).toBe("would submit:\ndb:host:localhost");
    expect(cdp.get("db", "host")).toBe("db.example.org"); // a preview changes nothing
    await page.click("#rollback-apply");
    await expect.poll(() => page.textContent("#rollback-result")).toBe("rolled back to revision 1: now at revision 3");
    await expect.poll(() => cell("db.host")).toBe('"localhost"');
    await expect.poll(() => page.textContent("#history tbody tr:first-child")).toContain("rollback from the dashboard");

    // previewing a schema change: ticker version 2 renames interval to period
    expect(await page.textContent("#versions")).toBe("db=1, ticker=1");
    const ticker = JSON.parse(await readFile(join(SCHEMAS, "ticker.schema.json"), "utf8")) as {
      properties: Record<string, unknown>;
      then: unknown;
      if: unknown;
    };
    const { interval, ...rest } = ticker.properties;
    const { if: _if, then: _then, ...plain } = ticker;
    const v2 = {
      ...plain,
      "x-cdp-version": 2,
      "x-cdp-migrations": { "2": { up: [{ op: "move", from: "/interval", path: "/period" }], down: [{ op: "move", from: "/period", path: "/interval" }] } },
      properties: { ...rest, period: interval },
    };
    await page.setInputFiles("#plan-files", { name: "ticker.schema.json", mimeType: "application/json", buffer: Buffer.from(JSON.stringify(v2)) });
    await page.click("#plan");
    await expect.poll(() => page.textContent("#plan-result")).toContain("ticker: version 1 → 2\n  renamed  interval → period");
    expect(await page.textContent("#plan-result")).toContain("db: version 1, no change");
    await page.setInputFiles("#plan-files", {
      name: "ticker.schema.json",
      mimeType: "application/json",
      buffer: Buffer.from(JSON.stringify({ ...v2, "x-cdp-migrations": {} })),
    });
    await page.click("#plan");
    await expect.poll(() => page.textContent("#plan-result")).toContain('refused: ticker cannot go from version 1 to 2: "x-cdp-migrations" has no step "2"');
    expect(cdp.get("ticker", "interval")).toBe(1500); // a preview changes nothing
    await page.screenshot({ path: process.env.CDP_SCREENSHOT ?? join(await tempDir(), "dashboard.png"), fullPage: true }); // CDP_SCREENSHOT=FILE keeps it to look at
  });

  it("shows only what its token may see and offers only what it may do", async () => {
    const dir = await dataDir();
    const tokens = join(await tempDir(), "tokens");
    await writeFile(tokens, `read ${TOKEN} bob apps=ticker\n`, { mode: 0o600 });
    const cdp = await startCdp({ init: true, dir, schemas: SCHEMAS, logger: capturedLogger().logger, http: { listen: "127.0.0.1:0", tokenFile: tokens } });
    afterThisTest(() => cdp.stop());
    await appendFile(join(dir, "cdp.new"), "db:host:db.example.org\nticker:token:hunter2-secret\nticker:interval:1500\n");
    const page = await browser.newPage();
    afterThisTest(() => page.close());
    await page.goto(cdp.url!);
    await page.fill("#token", TOKEN);
    await page.click("text=Use token");
    await expect.poll(() => page.textContent("#status")).toBe("live");
    await expect.poll(() => page.textContent('tr[data-key="ticker.interval"] td.value')).toBe("1500");
    expect(await page.textContent("#who")).toBe("as bob: read, apps ticker");
    expect(await page.locator('tr[data-key="db.host"]').count()).toBe(0);
    expect(await page.textContent("body")).not.toContain("hunter2");
    for (const form of ["#change-form", "#rollback-form", "#plan-form", "#rollout-form"]) expect([form, await page.isVisible(form)]).toEqual([form, false]);
    await appendFile(join(dir, "cdp.new"), "db:host:db2.example.org\nticker:interval:1600\n");
    await expect.poll(() => page.textContent('tr[data-key="ticker.interval"] td.value')).toBe("1600");
    expect(await page.textContent("#history")).not.toContain("db.host");
  });

  it("shows what is scheduled and counts down to it", async () => {
    const dir = await dataDir();
    const cdp = await startCdp({ init: true, dir, schemas: SCHEMAS, logger: capturedLogger().logger, http: { listen: "127.0.0.1:0" } });
    afterThisTest(() => cdp.stop());
    const page = await browser.newPage();
    afterThisTest(() => page.close());
    await page.goto(cdp.url!);
    await expect.poll(() => page.textContent("#status")).toBe("live");
    expect(await page.isVisible("#schedule-none")).toBe(true);
    const made = await fetch(`${cdp.url}/v1/changes?at=%2B2m`, {
      method: "POST",
      body: "ticker:interval:1500\n",
      headers: { "x-cdp-reason": "after the deploy" },
    });
    const { id } = (await made.json()) as { id: string };
    const row = `#schedule tr[data-schedule="${id}"]`;
    await expect.poll(() => page.locator(row).count(), { timeout: 15_000 }).toBe(1);
    expect(await page.textContent(`${row} td:nth-child(4)`)).toBe("ticker:interval:1500");
    expect(await page.textContent(`${row} td:nth-child(6)`)).toBe("after the deploy");
    const left = async () => page.textContent(`${row} td:nth-child(3)`);
    expect(await left()).toMatch(/^(1 min \d+ s|2 min 0 s)$/);
    const first = await left();
    await expect.poll(left, { timeout: 15_000 }).not.toBe(first); // it counts down
  });

  it("shows a fleet's rollouts with their countdown, starts one, and aborts or promotes it with a button", async () => {
    const { endpoints } = await startEtcd();
    const { logger } = capturedLogger();
    const start = async (host: string) => {
      const cdp = await startCdp({
        init: true,
        dir: await tempDir(),
        schemas: SCHEMAS,
        logger,
        http: { listen: "127.0.0.1:0" },
        cluster: { endpoints, prefix: "/cdp/dashboard", host },
      });
      afterThisTest(() => cdp.stop());
      return cdp;
    };
    const [a, b] = [await start("a"), await start("b")];
    const page = await browser.newPage();
    afterThisTest(() => page.close());
    await page.goto(a.url!);
    await expect.poll(() => page.locator("#hosts tbody tr").count()).toBe(2);

    await page.fill("#rollout-lines", "ticker:interval:1500");
    await page.fill("#rollout-hosts", "b");
    await page.fill("#rollout-bake", "120");
    await page.click("#rollout-start");
    await expect.poll(() => page.textContent("#rollout-result")).toMatch(/^rollout r-\S+ staged on b$/);
    const first = page.locator("#rollouts tbody tr").first();
    // the canary's value beside the fleet's, the host the page is served by
    expect(await first.textContent()).toMatch(/^r-\S+tickerbakingb1[12]\d s leftticker\.interval: 1000 → 1500/);
    await expect.poll(() => page.textContent("#host")).toBe("a");
    // one line per cell: never wrapped letter by letter
    expect(b.get("ticker", "interval")).toBe(1500);
    expect(a.get("ticker", "interval")).toBe(1000);
    await expect.poll(() => page.textContent("#revision")).toBe("1"); // the staged step is a revision on every host
    await expect.poll(() => page.textContent('#hosts tr[data-host="b"]')).toContain("canary of r-");
    expect(await page.textContent('#hosts tr[data-host="a"]')).not.toContain("canary");
    await page.screenshot({ path: process.env.CDP_SCREENSHOT_ROLLOUTS ?? join(await tempDir(), "rollouts.png"), fullPage: true }); // CDP_SCREENSHOT_ROLLOUTS=FILE keeps it
    // the short cells take one line each: never wrapped letter by letter
    const lines = await page.evaluate(() =>
      [...document.querySelectorAll("#rollouts tbody tr:first-child td")].map((td) => {
        const range = document.createRange();
        range.selectNodeContents(td);
        return new Set([...range.getClientRects()].map((rect) => Math.round(rect.top))).size;
      }),
    );
    expect([lines[0], lines[1], lines[3], lines[4]]).toEqual([1, 1, 1, 1]);
    await first.locator("button[data-action=promote]").click();
    await expect.poll(() => first.textContent()).toContain("promoted: promoted by");
    await expect.poll(() => a.get("ticker", "interval")).toBe(1500);

    await page.fill("#rollout-lines", "ticker:interval:1700");
    await page.click("#rollout-start");
    page.once("dialog", (dialog) => void dialog.accept("error budget burning"));
    await page.locator("#rollouts tbody tr").first().locator("button[data-action=abort]").click();
    await expect.poll(() => page.locator("#rollouts tbody tr").first().textContent()).toContain("aborted: aborted by");
    expect(await page.locator("#rollouts tbody tr").first().textContent()).toContain("error budget burning");
    await expect.poll(() => b.get("ticker", "interval")).toBe(1500);
    expect(await page.locator("#rollouts tbody tr").count()).toBe(2);
  });
});
