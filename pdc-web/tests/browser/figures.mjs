// pdc-web's figures in headless Chromium (BENCHMARKS.md): wasm size,
// worker start -> engine open with 10,000 pending sales and 5,000 products
// on a warm HTTP cache (with the default Argon2id, whose dummy hash is
// stated apart), durable record p50/p99 from the main thread, product
// lookup round trip, offline PIN login at the default KDF, wasm memory.
// Usage: node figures.mjs (PDC, CHROMIUM as in e2e.mjs; embedded ledger).
import http from "node:http";
import fs from "node:fs";
import zlib from "node:zlib";
import path from "node:path";
import { spawn, execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const repo = path.resolve(root, "..");
const PDC = process.env.PDC ?? path.join(repo, "target/release/pdc");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const work = fs.mkdtempSync("/tmp/pdc-web-figures-");
const ledger = ["--ledger", path.join(work, "ledger.redb")];

const wasmBytes = fs.readFileSync(path.join(root, "pkg/pdc_web_bg.wasm"));
const gz = zlib.gzipSync(wasmBytes, { level: 9 }).length;

const types = { ".js": "text/javascript", ".html": "text/html", ".css": "text/css", ".wasm": "application/wasm" };
const files = http.createServer((req, res) => {
  const file = path.join(root, decodeURIComponent(new URL(req.url, "http://x").pathname));
  if (!file.startsWith(root) || !fs.existsSync(file) || fs.statSync(file).isDirectory()) {
    res.writeHead(404).end();
    return;
  }
  // Cacheable, so that the second load is a warm-cache load.
  res.writeHead(200, { "content-type": types[path.extname(file)] ?? "application/octet-stream", "cache-control": "max-age=3600" });
  fs.createReadStream(file).pipe(res);
});
await new Promise((r) => files.listen(0, "127.0.0.1", r));
const origin = `http://127.0.0.1:${files.address().port}`;

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
const server = await new Promise((resolve, reject) => {
  const p = spawn(PDC, ["serve", ...ledger, "--listen", "127.0.0.1:0", "--cors-origin", origin],
    { env: { ...process.env, RUST_LOG: "warn" }, stdio: ["ignore", "pipe", "inherit"] });
  p.stdout.on("data", (d) => {
    const m = /listening on (http:\/\/\S+)/.exec(String(d));
    if (m) resolve({ proc: p, url: m[1] });
  });
  p.on("exit", (code) => reject(new Error(`pdc serve exited ${code}`)));
});

const ctx = await chromium.launchPersistentContext(fs.mkdtempSync("/tmp/pdc-web-fig-profile-"), {
  executablePath: CHROMIUM, headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
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
server.proc.kill("SIGTERM");
await new Promise((r) => server.proc.once("exit", r));
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
  return { openMs, pending, loginMs, recP50: rec[250], recP99: rec[495], lookMean, memory: await till.memoryBytes() };
}, config);
await ctx.close();
files.close();
const out = {
  wasmBytes: wasmBytes.length, wasmGzip: gz, openMs: +f.openMs.toFixed(1), pending: f.pending,
  loginMs: +f.loginMs.toFixed(1), openExclKdfMs: +(f.openMs - f.loginMs).toFixed(1),
  recordP50Ms: f.recP50, recordP99Ms: f.recP99, lookupMeanUs: +(f.lookMean * 1000).toFixed(0),
  wasmMemoryMB: +(f.memory / 1048576).toFixed(1),
};
console.log(JSON.stringify(out));
