// What the browser tests share: the static file server for pdc-web's
// files, Chromium's flags on these machines, and `pdc serve`.
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const repo = path.resolve(root, "..");
export const PDC = process.env.PDC ?? path.join(repo, "target/release/pdc");
export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
/** Headless, as root, on a closed network (see NOTES.md "Browser"). */
export const CHROME_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

const types = { ".js": "text/javascript", ".mjs": "text/javascript", ".html": "text/html", ".css": "text/css", ".wasm": "application/wasm" };

/** Serves pdc-web's directory on 127.0.0.1; resolves to `{server, origin}`. */
export async function serveFiles({ cacheable = false } = {}) {
  const server = http.createServer((req, res) => {
    // The till's service worker is served at the root, as `pdc serve --web` does.
    const pathname = decodeURIComponent(new URL(req.url, "http://x").pathname);
    const file = path.join(root, pathname === "/sw.js" ? "till/sw.js" : pathname);
    if (!file.startsWith(root) || !fs.existsSync(file) || fs.statSync(file).isDirectory()) {
      res.writeHead(404).end();
      return;
    }
    const headers = { "content-type": types[path.extname(file)] ?? "application/octet-stream" };
    if (cacheable) headers["cache-control"] = "max-age=3600";
    res.writeHead(200, headers);
    fs.createReadStream(file).pipe(res);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { server, origin: `http://127.0.0.1:${server.address().port}` };
}

/** Starts `pdc serve ARGS`; resolves to `{proc, url}` once it listens. */
export function startPdc(args) {
  return new Promise((resolve, reject) => {
    const proc = spawn(PDC, ["serve", ...args],
      { env: { ...process.env, RUST_LOG: "warn" }, stdio: ["ignore", "pipe", "inherit"] });
    proc.stdout.on("data", (d) => {
      const m = /listening on (http:\/\/\S+)/.exec(String(d));
      if (m) resolve({ proc, url: m[1] });
    });
    proc.on("exit", (code) => reject(new Error(`pdc serve exited ${code}`)));
  });
}

/** Stops a `startPdc` server gracefully and waits for it. */
export async function stopPdc(s) {
  s.proc.kill("SIGTERM");
  await new Promise((r) => s.proc.once("exit", r));
}
