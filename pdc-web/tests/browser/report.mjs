// The demo's HTML report in headless Chromium: a short `pdc demo` writes
// it, the page is opened from the file, its parts are checked as a reader
// sees them (charts with a time axis in seconds, a legend naming every
// terminal, the outages labelled, summary tables, no script), and a
// screenshot is written to target/pdc-demo-report.png.
// Usage: PDC=target/debug/pdc node report.mjs
import fs from "node:fs";
import path from "node:path";
import { execFileSync } from "node:child_process";
import { chromium } from "playwright-core";
import { PDC, CHROMIUM, CHROME_ARGS, repo } from "./harness.mjs";

const dir = fs.mkdtempSync("/tmp/pdc-report-");
const file = path.join(dir, "report.html");
const terminals = 4;
execFileSync(PDC, ["demo", "--terminals", String(terminals), "--seconds", "8", "--report", file],
  { stdio: ["ignore", "ignore", "inherit"] });

const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROME_ARGS, headless: true });
const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
await page.goto(`file://${file}`);
const seen = await page.evaluate(() => ({
  svgs: document.querySelectorAll("svg").length,
  scripts: document.querySelectorAll("script").length,
  texts: [...document.querySelectorAll("svg text")].map((t) => t.textContent),
  tables: [...document.querySelectorAll("table")].length,
  rows: Object.fromEntries([...document.querySelectorAll("tr")].map((r) =>
    [r.querySelector("th")?.textContent, r.querySelector("td")?.textContent])),
  width: document.querySelector("svg").getBoundingClientRect().width,
}));
const fail = (m) => { console.error("REPORT FAIL:", m, JSON.stringify(seen).slice(0, 2000)); process.exit(1); };
if (seen.svgs !== 3) fail("three charts");
if (seen.scripts !== 0) fail("no script");
if (!seen.texts.includes("time since the session started (s)")) fail("a time axis");
if (!seen.texts.includes("0")) fail("time ticks");
for (let t = 0; t < terminals; t++) {
  const name = `till-${String(t).padStart(2, "0")}`;
  if (seen.texts.filter((x) => x === name).length < 2) fail(`legend and link row for ${name}`);
}
if (seen.tables < 5) fail("summary tables");
if (seen.rows["lost (must be 0)"] !== "0") fail("nothing lost");
if (seen.rows["applied twice (must be 0)"] !== "0") fail("nothing doubled");
const outages = Number(seen.rows["server outages"]);
if (outages > 0 && !seen.texts.some((x) => /^outage 1: [0-9.]+–[0-9.]+ s$/.test(x))) fail("outages labelled");
if (!(seen.width > 800)) fail("rendered at size");
const shot = path.join(repo, "target/pdc-demo-report.png");
fs.mkdirSync(path.dirname(shot), { recursive: true });
await page.screenshot({ path: shot, fullPage: true });
await browser.close();
const bytes = fs.statSync(shot).size;
if (bytes < 20_000) fail(`screenshot of ${bytes} bytes`);
console.log(`REPORT OK: ${outages} outage(s), screenshot ${shot} (${bytes} bytes)`);
