// The web till's service worker, served at /sw.js (scope "/") so that it
// controls the page and the engine's dedicated worker (/js/worker.js):
// the till's shell — page, script, style, JS client, worker, the engine's
// wasm and its bindings — is kept in Cache Storage, so a till whose server
// is down still reloads and keeps selling from its OPFS store.
//
// Network first: a reachable server always gives the newest version (and
// refreshes the cache); the cached copy answers only when the network
// fails. The API (/v1/...) is never cached or answered from a cache.
const CACHE = "pdc-till-shell-v2";
const SHELL = [
  "/till/index.html",
  "/till/till.js",
  "/till/till.css",
  "/js/client.js",
  "/js/worker.js",
  "/pkg/pdc_web.js",
  "/pkg/pdc_web_bg.wasm",
];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) if (name !== CACHE) await caches.delete(name);
    await self.clients.claim();
  })());
});

/** The cache key of a shell request: `/till/` and `/till/?server=…` are the page. */
function shellKey(url) {
  if (url.origin !== self.location.origin) return null;
  const path = url.pathname === "/till/" ? "/till/index.html" : url.pathname;
  return SHELL.includes(path) ? path : null;
}

self.addEventListener("fetch", (event) => {
  if (event.request.method !== "GET") return;
  const key = shellKey(new URL(event.request.url));
  if (!key) return;
  event.respondWith((async () => {
    const cache = await caches.open(CACHE);
    try {
      const fresh = await fetch(event.request);
      if (fresh.ok) await cache.put(key, fresh.clone());
      return fresh;
    } catch (e) {
      const cached = await cache.match(key);
      if (cached) return cached;
      throw e;
    }
  })());
});
