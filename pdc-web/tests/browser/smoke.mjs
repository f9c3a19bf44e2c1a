// Smoke test of pdc-web in headless Chromium: the engine opens in a
// worker on OPFS, records sales durably, they survive a reload, a second
// tab gets "open_in_another_tab". No server (sync fails offline).
// Usage: node smoke.mjs  (needs pdc-web/pkg from wasm-bindgen and
// playwright-core; CHROMIUM=/usr/bin/chromium)
import fs from "node:fs";
import { chromium } from "playwright-core";
import { serveFiles, CHROMIUM, CHROME_ARGS } from "./harness.mjs";

const { server, origin: base } = await serveFiles();

const profile = fs.mkdtempSync("/tmp/pdc-web-profile-");
const ctx = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM, args: CHROME_ARGS, headless: true,
});
const page = await ctx.newPage();
page.on("console", (m) => console.log("page:", m.text()));
page.on("pageerror", (e) => console.log("page error:", e.message));
await page.goto(`${base}/tests/browser/smoke.html`);
await page.waitForFunction(() => window.ready);
const config = { terminalId: "till-web-1", serverUrl: "http://127.0.0.1:9", token: "t", datasets: [], insecureTestKdf: true };
const first = await page.evaluate(async (config) => {
  const t0 = performance.now();
  const till = await window.pdc.PdcClient.open(config);
  const openMs = performance.now() - t0;
  const lat = [];
  for (let i = 0; i < 200; i++) {
    const t = performance.now();
    await till.record({ stream: i, priority: "high", kind: 100, payload: new Uint8Array(120).fill(i % 251) });
    lat.push(performance.now() - t);
  }
  lat.sort((a, b) => a - b);
  let refused = null;
  try { await till.record({ stream: 1, kind: 100, payload: new Uint8Array(2 << 20) }); } catch (e) { refused = e.code; }
  window.till = till;
  return { openMs, opened: till.opened, pending: await till.pending(), p50: lat[100], p99: lat[198], refused };
}, config);
console.log("first open:", JSON.stringify(first));
// A second tab on the same store gets the clear refusal.
const tab2 = await ctx.newPage();
await tab2.goto(`${base}/tests/browser/smoke.html`);
await tab2.waitForFunction(() => window.ready);
const second = await tab2.evaluate(async (config) => {
  try { await window.pdc.PdcClient.open(config); return "opened"; } catch (e) { return e.code; }
}, config);
console.log("second tab:", second);
await tab2.close();
// Reload: the sales are still there.
await page.reload();
await page.waitForFunction(() => window.ready);
const again = await page.evaluate(async (config) => {
  const till = await window.pdc.PdcClient.open(config);
  return { pending: await till.pending(), status: await till.status() };
}, config);
console.log("after reload:", JSON.stringify(again));
await ctx.close();
server.close();
const ok = first.pending === 200 && first.refused === "item_too_large" && second === "open_in_another_tab" && again.pending === 200;
console.log(ok ? "SMOKE OK" : "SMOKE FAILED");
process.exit(ok ? 0 : 1);
