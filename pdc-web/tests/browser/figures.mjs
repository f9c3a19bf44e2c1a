// pdc-web's figures in headless Chromium (BENCHMARKS.md): wasm size,
// worker start -> engine open with 10,000 pending sales and 5,000 products
// on a warm HTTP cache (with the default Argon2id, whose dummy hash is
// stated apart), durable record p50/p99 from the main thread, product
// lookup round trip, offline PIN login at the default KDF, wasm memory.
// Usage: node figures.mjs (PDC, CHROMIUM as in e2e.mjs; embedded ledger).
import fs from "node:fs";
import zlib from "node:zlib";
import path from "node:path";
import { execFileSync } from "node:child_process";
import { chromium } from "playwright-core";
import { serveFiles, startPdc, stopPdc, root, PDC, CHROMIUM, CHROME_ARGS } from "./harness.mjs";

const work = fs.mkdtempSync("/tmp/pdc-web-figures-");
const ledger = ["--ledger", path.join(work, "ledger.redb")];

const wasmBytes = fs.readFileSync(path.join(root, "pkg/pdc_web_bg.wasm"));
const gz = zlib.gzipSync(wasmBytes, { level: 9 }).length;

// Cacheable, so that the second load is a warm-cache load.
const { server: files, origin } = await serveFiles({ cacheable: true });


const terminal = "till-fig";
const token = execFileSync(PDC, ["terminal", "add", terminal, ...ledger], { encoding: "utf8" }).trim().split(/\s+/)[1];
const products = Array.from({ length: 5000 }, (_, i) => ({
  id: 1 + i, name: `Product ${1 + i}`, barcode: String(4000000000000 + i), category: `Cat ${i % 40}`,
  price_cents: 50 + (i * 37) % 5000, tax_rate_bp: 700, active: true,
}));
fs.writeFileSync(path.join(work, "products.json"), JSON.stringify(products));
fs.writeFileSync(path.join(work, "users.json"), JSON.stringify([{ id: 1, user_id: "alice", role: "cashier", pin: "582917" }]));
for (const name of ["products", "users"]) {
  execFileSync(PDC, ["dataset", "import", name, path.join(work, `${name}.json`), ...ledger], { stdio: "inherit" });
}
const server = await startPdc([...ledger, "--listen", "127.0.0.1:0", "--cors-origin", origin]);

const ctx = await chromium.launchPersistentContext(fs.mkdtempSync("/tmp/pdc-web-fig-profile-"), {
  executablePath: CHROMIUM, headless: true, args: CHROME_ARGS,
});
const page = await ctx.newPage();
page.on("pageerror", (e) => console.log("page error:", e.message));
await page.goto(`${origin}/tests/browser/smoke.html`);
await page.waitForFunction(() => window.ready);
const config = { terminalId: terminal, serverUrl: server.url, token, datasets: ["products", "users"] };
// Fill the store: the catalogue by a pull, then 10,000 sales offline.
await page.evaluate(async (config) => {
  const till = await window.pdc.PdcClient.open(config);
  await till.pull();
  await till.close();
}, config);
await stopPdc(server);
await page.evaluate(async (config) => {
  const till = await window.pdc.PdcClient.open({ ...config, serverUrl: "http://127.0.0.1:9" });
  for (let k = 0; k < 20; k++) {
    const sales = Array.from({ length: 500 }, (_, i) => ({ stream: k * 500 + i, priority: "high", kind: 100, payload: new Uint8Array(160).fill(i % 251) }));
    await till.recordMany(sales);
  }
  await till.close();
}, config);
// Warm-cache load and the figures.
await page.reload();
await page.waitForFunction(() => window.ready);
const f = await page.evaluate(async (config) => {
  const t0 = performance.now();
  const till = await window.pdc.PdcClient.open({ ...config, serverUrl: "http://127.0.0.1:9" });
  const openMs = performance.now() - t0;
  const pending = await till.pending();
  const l0 = performance.now();
  await till.login("alice", "582917");
  const loginMs = performance.now() - l0;
  const rec = [];
  for (let i = 0; i < 500; i++) {
    const t = performance.now();
    await till.record({ stream: 100000 + i, priority: "high", kind: 100, payload: new Uint8Array(160) });
    rec.push(performance.now() - t);
  }
  rec.sort((a, b) => a - b);
  for (let id = 1; id <= 5000; id++) await till.reference("products", id); // fill the memory cache
  // performance.now() is coarsened to 0.1 ms here: time the whole run.
  const look0 = performance.now();
  for (let i = 0; i < 2000; i++) await till.reference("products", 1 + ((i * 7919) % 5000));
  const lookMean = (performance.now() - look0) / 2000;
  const prod0 = performance.now();
  for (let i = 0; i < 2000; i++) await till.product(1 + ((i * 7919) % 5000));
  const productMean = (performance.now() - prod0) / 2000;
  await till.productByBarcode("4000000000000"); // builds the barcode index
  const bar0 = performance.now();
  for (let i = 0; i < 2000; i++) await till.productByBarcode(String(4000000000000 + ((i * 7919) % 5000)));
  const barcodeMean = (performance.now() - bar0) / 2000;
  // The page's own copy (PdcClient.catalogue): no round trip.
  const cat = await till.catalogue();
  let found = 0;
  const cat0 = performance.now();
  for (let i = 0; i < 200000; i++) found += cat.byBarcode(String(4000000000000 + ((i * 7919) % 5000))) ? 1 : 0;
  const catalogueMean = (performance.now() - cat0) / 200000;
  if (found !== 200000) throw new Error(`catalogue lookups found ${found}`);
  // The floor: a round trip to the worker that does (almost) nothing.
  const floor0 = performance.now();
  for (let i = 0; i < 2000; i++) await till.pending();
  const floorMean = (performance.now() - floor0) / 2000;
  return { openMs, pending, loginMs, recP50: rec[250], recP99: rec[495], lookMean, productMean, barcodeMean, floorMean, catalogueMean, catalogueSize: cat.size,
    memory: await till.memoryBytes() };
}, config);
await ctx.close();
files.close();
const out = {
  wasmBytes: wasmBytes.length, wasmGzip: gz, openMs: +f.openMs.toFixed(1), pending: f.pending,
  loginMs: +f.loginMs.toFixed(1), openExclKdfMs: +(f.openMs - f.loginMs).toFixed(1),
  recordP50Ms: f.recP50, recordP99Ms: f.recP99, lookupMeanUs: +(f.lookMean * 1000).toFixed(0),
  productMeanUs: +(f.productMean * 1000).toFixed(0), barcodeMeanUs: +(f.barcodeMean * 1000).toFixed(0),
  roundTripFloorUs: +(f.floorMean * 1000).toFixed(0),
  pageCatalogueLookupUs: +(f.catalogueMean * 1000).toFixed(3), pageCatalogueSize: f.catalogueSize,
  wasmMemoryMB: +(f.memory / 1048576).toFixed(1),
};
console.log(JSON.stringify(out));
