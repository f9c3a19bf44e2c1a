// The pdc engine's dedicated worker: owns the store (a Web Lock named after
// it, then the OPFS file's exclusive sync access handle), drives sync with
// timers, and answers the page's messages ({id, method, args} ->
// {id, ok, value} or {id, ok: false, error: {code, message}}). It also
// posts {type: "status", status} after every sync pass and
// {type: "panic", message} if the engine panics (the page restarts the
// worker: a panicked wasm instance is dead).
import init, { WebEngine } from "../pkg/pdc_web.js";

let engine = null;
let releaseLock = null;
let timer = null;
let driving = false;
let nextPing = 0;
let nextPull = 0;
const PING_ONLINE = 30_000;
const PING_RECOVERING = 5_000;
const PULL_EVERY = 300_000;
// The change stream: one long poll at a time, the server answers within
// CHANGE_WAIT s; after a failure the next try waits a jittered 1-5 s,
// doubling up to 60 s (so a restarted server is not hit by every till at
// once).
const CHANGE_WAIT = 25;
// Stock levels (GET /v1/stock): after every pull and once a minute; a
// server without stock (null) is not asked again.
const STOCK_EVERY = 60_000;
let nextStock = 0;
let pulling = null;

self.__pdcPanic = (message) => self.postMessage({ type: "panic", message });

function fail(code, message) {
  const e = new Error(message);
  e.name = code;
  return e;
}

/** Takes the store's Web Lock, or reports that another tab holds it. */
function acquire(name) {
  return new Promise((resolve, reject) => {
    navigator.locks
      .request(`pdc-store:${name}`, { ifAvailable: true }, (lock) => {
        if (!lock) {
          resolve(false);
          return undefined;
        }
        resolve(true);
        // Held until close (or until the worker ends).
        return new Promise((release) => {
          releaseLock = release;
        });
      })
      .catch(reject);
  });
}

function schedule(ms) {
  clearTimeout(timer);
  timer = setTimeout(drive, Math.max(0, Math.min(ms, PING_ONLINE)));
}

/** Pulls, one pull at a time (the driver's and the change stream's). */
function pullOnce() {
  pulling ??= engine.pull().finally(() => {
    pulling = null;
  });
  return pulling;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Follows the server's change stream while `mine` is the open engine: a
 * change to the till's view is pulled at once (periodic pulls stay the
 * fallback); a server without the stream ends the loop.
 */
async function follow(mine) {
  let backoff = 0;
  while (engine === mine) {
    try {
      const changed = await mine.waitChanges(CHANGE_WAIT);
      if (engine !== mine) return;
      if (changed === null) return;
      backoff = 0;
      if (changed) {
        await pullOnce();
        nextPull = Date.now() + PULL_EVERY;
        self.postMessage({ type: "status", status: JSON.parse(mine.status()) });
      }
    } catch {
      backoff = backoff === 0 ? 1_000 + Math.random() * 4_000 : Math.min(backoff * 2, 60_000);
      await sleep(backoff);
    }
  }
}

/** One driver turn: probe, pull, sync when due; then sleep until the next. */
async function drive() {
  if (!engine || driving) return;
  driving = true;
  try {
    const now = Date.now();
    if (now >= nextPing) {
      try {
        await engine.ping();
        nextPing = now + PING_ONLINE;
      } catch {
        nextPing = now + PING_RECOVERING;
      }
    }
    if (Date.now() >= nextPull) {
      try {
        await pullOnce();
        nextPull = Date.now() + PULL_EVERY;
      } catch {
        nextPull = Date.now() + PING_RECOVERING;
      }
    }
    if (nextStock !== null && Date.now() >= nextStock) {
      try {
        const n = await engine.pullStock();
        nextStock = n === null ? null : Date.now() + STOCK_EVERY;
      } catch {
        nextStock = Date.now() + PING_RECOVERING;
      }
    }
    try {
      await engine.syncOnce();
    } catch {
      // Retried at the next wake-up; the engine's backoff paces it.
    }
    self.postMessage({ type: "status", status: JSON.parse(engine.status()) });
  } finally {
    driving = false;
    if (engine) {
      const wake = engine.nextWakeupMs();
      const untilPing = nextPing - Date.now();
      schedule(wake === undefined ? untilPing : Math.min(wake, untilPing));
    }
  }
}

const methods = {
  async open(config) {
    if (engine) throw fail("already_open", "the engine is open");
    await init();
    const name = config.storeName ?? `${config.terminalId}.pdc`;
    if (!(await acquire(name))) {
      throw fail("open_in_another_tab", `the store ${name} is open in another tab`);
    }
    try {
      engine = await WebEngine.open(JSON.stringify({ ...config, storeName: name }));
    } catch (e) {
      releaseLock?.();
      releaseLock = null;
      throw e;
    }
    schedule(0);
    follow(engine).catch(() => {});
    return { persisted: engine.persisted, pending: engine.pending() };
  },
  record(sale) {
    const id = engine.record(sale);
    schedule(0);
    return id;
  },
  recordMany(sales) {
    const ids = engine.recordMany(sales);
    schedule(0);
    return Array.from(ids);
  },
  recordOrder(order) {
    const r = JSON.parse(engine.recordOrder(JSON.stringify(order)));
    schedule(0);
    return r;
  },
  refundOrder(refund) {
    const r = JSON.parse(engine.refundOrder(JSON.stringify(refund)));
    schedule(0);
    return r;
  },
  track({ name, properties }) {
    const id = engine.track(name, JSON.stringify(properties ?? {}));
    schedule(0);
    return id;
  },
  products() {
    return JSON.parse(engine.products());
  },
  pending() {
    return engine.pending();
  },
  memoryBytes() {
    return WebEngine.memoryBytes();
  },
  status() {
    return JSON.parse(engine.status());
  },
  async syncNow() {
    await engine.syncOnce();
    return JSON.parse(engine.status());
  },
  async pull() {
    await pullOnce();
  },
  async pullStock() {
    return await engine.pullStock();
  },
  stockLevel(productId) {
    return engine.stockLevel(productId);
  },
  setOnline(online) {
    engine.setOnline(online);
    if (online) schedule(0);
  },
  login(userId, pin) {
    return JSON.parse(engine.login(userId, pin));
  },
  enrol(userId, role, pin) {
    engine.enrol(userId, role, pin);
  },
  async product(id) {
    const p = await engine.product(id);
    return p === undefined ? undefined : JSON.parse(p);
  },
  async productByBarcode(barcode) {
    const p = await engine.productByBarcode(barcode);
    return p === undefined ? undefined : JSON.parse(p);
  },
  async reference(dataset, id) {
    return await engine.reference(dataset, id);
  },
  events() {
    const out = [];
    for (let e = engine.pollEvent(); e !== undefined; e = engine.pollEvent()) out.push(JSON.parse(e));
    return out;
  },
  close() {
    clearTimeout(timer);
    engine?.free();
    engine = null;
    releaseLock?.();
    releaseLock = null;
  },
};

self.onmessage = async (msg) => {
  const { id, method, args } = msg.data ?? {};
  try {
    const f = methods[method];
    if (!f) throw fail("unknown_method", `no method ${method}`);
    if (!engine && method !== "open") throw fail("not_open", "open the engine first");
    const value = await f(...(args ?? []));
    self.postMessage({ id, ok: true, value });
  } catch (e) {
    self.postMessage({
      id,
      ok: false,
      error: { code: e?.name ?? "error", message: e?.message ?? String(e) },
    });
  }
};
