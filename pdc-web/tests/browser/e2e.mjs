// End to end in headless Chromium against a real `pdc serve --web` on
// loopback (PostgreSQL ledger, a catalogue and a cashier imported first),
// through the web till page it serves on its own origin: 50 orders online;
// the server stops; 50 more offline; the page reloads (from the service
// worker's shell, the server being down); the browser is SIGKILLed and
// started again on the same profile; the cashier logs in by PIN in the page, offline; one more sale
// through the page's buttons; the server starts again; all 101 orders are
// applied exactly once, counted in the server's ledger (SQL), not by the
// page. A screenshot of the till is written to target/pdc-web-e2e.png.
//
// Env: PDC (the pdc binary, default ../../../target/release/pdc),
// DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test),
// CHROMIUM (default /usr/bin/chromium).
import fs from "node:fs";
import path from "node:path";
import { spawn, execFileSync } from "node:child_process";
import { chromium } from "playwright-core";
import { startPdc, stopPdc, root, repo, PDC, CHROMIUM, CHROME_ARGS } from "./harness.mjs";

const DB = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";
const terminal = `till-web-${process.pid}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const token = execFileSync(PDC, ["terminal", "add", terminal, "--database-url", DB], { encoding: "utf8" })
  .trim().split(/\s+/)[1];
// A catalogue and a cashier, as an administrator imports them.
const catalogue = Array.from({ length: 40 }, (_, i) => ({
  id: 7001 + i, name: ["Espresso", "Croissant", "Baguette", "Orange juice", "Muesli", "Cheddar", "Apples 1kg", "Olive oil"][i % 8] + ` ${1 + Math.floor(i / 8)}`,
  barcode: String(4006381333900 + i), category: ["Drinks", "Bakery", "Grocery", "Dairy", "Produce"][i % 5],
  price_cents: 95 + 37 * i, tax_rate_bp: 700, active: true,
}));
const data = fs.mkdtempSync("/tmp/pdc-web-data-");
fs.writeFileSync(path.join(data, "products.json"), JSON.stringify(catalogue));
fs.writeFileSync(path.join(data, "users.json"), JSON.stringify([{ id: 1, user_id: "alice", role: "cashier", pin: "582917" }]));
for (const name of ["products", "users"]) {
  execFileSync(PDC, ["dataset", "import", name, path.join(data, `${name}.json`), "--database-url", DB], { stdio: "inherit" });
}

let serverUrl = null;
// The server keeps stock from the sales (track_stock).
fs.writeFileSync(path.join(data, "pdc.toml"), "track_stock = true\n");
const startServer = (listen) => startPdc(["--database-url", DB, "--config", path.join(data, "pdc.toml"), "--listen", listen,
  "--web", "--web-pkg", path.join(root, "pkg")]);
const stopServer = stopPdc;

const profile = fs.mkdtempSync("/tmp/pdc-web-e2e-");
async function startBrowser() {
  const proc = spawn(CHROMIUM, [...CHROME_ARGS, `--user-data-dir=${profile}`, "--remote-debugging-port=0", "about:blank"],
    { stdio: "ignore" });
  const portFile = path.join(profile, "DevToolsActivePort");
  for (let i = 0; i < 200 && !fs.existsSync(portFile); i++) await sleep(50);
  await sleep(100);
  const port = fs.readFileSync(portFile, "utf8").split("\n")[0];
  fs.rmSync(portFile);
  const browser = await chromium.connectOverCDP(`http://127.0.0.1:${port}`);
  const page = await browser.contexts()[0].newPage();
  page.on("pageerror", (e) => console.log("page error:", e.message));
  return { proc, browser, page };
}

// The till talks to the origin that serves it.
const tillUrl = () => `${serverUrl}/till/?terminal=${terminal}&token=${token}`;
async function openTill(page) {
  await page.goto(tillUrl());
  await page.waitForFunction(() => window.tillReady || window.tillError, null, { timeout: 60_000 });
  return page.evaluate(() => window.tillError ?? window.till.pending());
}

const sell = (page, n, from) => page.evaluate(async ({ n, from, catalogue }) => {
  for (let i = 0; i < n; i++) {
    const p = catalogue[(from + i) % catalogue.length];
    const q = 1 + ((from + i) % 3);
    await window.till.recordOrder({
      cashierId: 1,
      lines: [{ productId: p.id, quantity: q, unitPriceCents: p.price_cents, taxRateBp: p.tax_rate_bp }],
      payments: [{ method: i % 2 ? "card" : "cash", amountCents: q * p.price_cents }],
    });
  }
  return window.till.pending();
}, { n, from, catalogue });
const drain = (page) => page.evaluate(async () => {
  for (let i = 0; i < 200; i++) {
    const s = await window.till.syncNow();
    if (s.pending === 0) return s;
    await new Promise((r) => setTimeout(r, 100));
  }
  return window.till.status();
});

const results = {};
let server = await startServer("127.0.0.1:0");
serverUrl = server.url;
// `pdc serve --web` serves the same till on the API's origin.
const tillPage = await fetch(`${serverUrl}/till/`);
const wasm = await fetch(`${serverUrl}/pkg/pdc_web_bg.wasm`);
results.servedTill = `${tillPage.status} ${wasm.status} ${wasm.headers.get("content-type")}`;
let b = await startBrowser();
results.opened = await openTill(b.page);
// The catalogue and the cashier reach the till with the first pull.
await b.page.evaluate(() => window.till.pull());
results.online = await sell(b.page, 50, 1);
results.afterOnlineSync = (await drain(b.page)).pending;
// A price change the back office imports reaches the online till through
// the change stream (its periodic pull is five minutes away).
const repriced = catalogue[0].price_cents + 11;
fs.writeFileSync(path.join(data, "products2.json"),
  JSON.stringify(catalogue.map((p, i) => (i === 0 ? { ...p, price_cents: repriced } : p))));
execFileSync(PDC, ["dataset", "import", "products", path.join(data, "products2.json"), "--database-url", DB], { stdio: "inherit" });
const imported = Date.now();
for (;;) {
  const p = await b.page.evaluate(() => window.till.product(7001));
  if (p?.priceCents === repriced) { results.changeStreamMs = Date.now() - imported; break; }
  if (Date.now() - imported > 20_000) { results.changeStreamMs = null; break; }
  await sleep(20);
}
// Stock from the sales just synced reaches the till (the server folds the
// movements about once a second).
for (let i = 0; i < 100; i++) {
  await b.page.evaluate(() => window.till.pullStock());
  results.stock = await b.page.evaluate(() => window.till.stockLevel(7002));
  if (results.stock < 0) break;
  await sleep(100);
}
// Headless Chromium does not grant persistent storage: the status says so
// and the badge warns (an evictable store is reported, not silent).
results.persisted = await b.page.evaluate(async () => (await window.till.status()).persisted);
results.badgeWarns = await b.page.getAttribute("#badge", "title");
results.shell = await b.page.evaluate(() => window.tillShell);
await stopServer(server);
results.offline = await sell(b.page, 50, 51);
results.afterReload = await openTill(b.page);
b.proc.kill("SIGKILL");
await new Promise((r) => b.proc.once("exit", r));
b = await startBrowser();
await b.page.setViewportSize({ width: 1280, height: 800 });
results.afterKill = await openTill(b.page);
// The cashier signs in by PIN, offline, and sells through the buttons.
await b.page.fill("#user", "alice");
await b.page.fill("#pin", "582917");
const t0 = Date.now();
await b.page.click("#login-form button");
await b.page.waitForSelector("#till:not([hidden])", { timeout: 30_000 });
results.offlineLoginMs = Date.now() - t0;
await b.page.fill("#search", "Croissant");
await b.page.click(".product >> nth=0");
await b.page.click(".product >> nth=0");
await b.page.fill("#search", "4006381333907");
await b.page.press("#search", "Enter");
fs.mkdirSync(path.join(repo, "target"), { recursive: true });
await b.page.screenshot({ path: path.join(repo, "target/pdc-web-till.png") });
await b.page.click("#pay-card");
await b.page.waitForSelector("#receipt[open]");
await b.page.screenshot({ path: path.join(repo, "target/pdc-web-e2e.png") });
results.receipt = await b.page.textContent("#receipt-state");
// Two croissants by search and a click, the olive oil by its barcode; the
// receipt carries the store's sale number (100 sales before it: 000101).
results.receiptNumber = /Receipt (\S+)/.exec(await b.page.textContent("#receipt-body"))?.[1];
results.receiptBody = await b.page.textContent("#receipt-body");
await b.page.click("#receipt-close");
// Offline still: a sale through the API, its refund naming it, an event.
results.refund = await b.page.evaluate(async (p) => {
  const line = { productId: p.id, quantity: 2, unitPriceCents: p.price_cents, taxRateBp: p.tax_rate_bp };
  const sold = await window.till.recordOrder({ cashierId: 1, lines: [line],
    payments: [{ method: "cash", amountCents: 2 * p.price_cents }] });
  const back = await window.till.refundOrder({ originalOrderId: sold.orderId, originalReceipt: sold.receiptNumber,
    cashierId: 1, lines: [{ ...line, quantity: 1 }], payments: [{ method: "cash", amountCents: p.price_cents }] });
  const event = await window.till.track("drawer_open", { reason: "refund" });
  return { sold: sold.receiptNumber, seqs: [sold.seq, back.seq], total: back.totalCents, event: typeof event };
}, catalogue[0]);
results.beforeRestart = await b.page.evaluate(() => window.till.pending());
server = await startServer(new URL(serverUrl).host);
results.afterRestartSync = (await drain(b.page)).pending;
await b.browser.close().catch(() => {});
b.proc.kill("SIGKILL");
await stopServer(server);
const count = execFileSync("psql", [DB, "-tAc",
  `SELECT count(*) || ' ' || count(*) FILTER (WHERE code IS NULL) FROM pdc_items WHERE terminal_id = '${terminal}'`], { encoding: "utf8" }).trim();
results.ledger = count;
results.refundRow = execFileSync("psql", [DB, "-tAc",
  `SELECT original_receipt || ' ' || total_cents FROM pos_refunds WHERE terminal_id = '${terminal}'`], { encoding: "utf8" }).trim();
console.log(JSON.stringify(results));
// While selling online the driver already syncs: some of the 50 may be gone.
const ok = results.online <= 50 && results.afterOnlineSync === 0 && results.offline === 50
  && results.afterReload === 50 && results.afterKill === 50 && results.beforeRestart === 54
  && results.afterRestartSync === 0 && count === "104 104" && results.changeStreamMs !== null && results.stock < 0
  && results.refund.seqs[0] === 102 && results.refund.seqs[1] === 103 && results.refund.event === "number"
  && results.refundRow === `${results.refund.sold} ${results.refund.total}`
  && results.servedTill === "200 200 application/wasm" && results.shell === "cached"
  && /^till-web-\d+-[0-9A-F]{8}-000101$/.test(results.receiptNumber ?? "")
  && /Croissant 1/.test(results.receiptBody) && /Olive oil 1/.test(results.receiptBody)
  && results.persisted === false && /not persisted/.test(results.badgeWarns ?? "");
console.log(ok ? "E2E OK" : "E2E FAILED");
process.exit(ok ? 0 : 1);
