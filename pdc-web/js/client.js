// The page's side of the pdc engine: a typed client that talks to the
// engine's dedicated worker (worker.js) by messages. No bundler needed.

/** An engine error: `code` says what kind, `message` what happened. */
export class PdcError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "PdcError";
    this.code = code;
  }
}

/**
 * The catalogue's products on the page's own thread, for lookups that
 * cannot wait for a worker round trip (a scanner, a search box): a copy of
 * the store's `products` dataset that the client replaces whenever the
 * worker reports a new version. Lookups are synchronous.
 */
export class Catalogue {
  #byId = new Map();
  #byBarcode = new Map();
  #list = [];
  #listeners = new Set();
  /** The dataset version this copy holds (`null` before the first pull). */
  version = null;

  /** @internal */
  replace(list, version) {
    this.#list = list;
    this.#byId = new Map(list.map((p) => [p.id, p]));
    // Ascending ids: the first product with a barcode keeps it, as in the engine.
    this.#byBarcode = new Map();
    for (const p of list) if (p.barcode && !this.#byBarcode.has(p.barcode)) this.#byBarcode.set(p.barcode, p);
    this.version = version;
    for (const cb of this.#listeners) cb(this);
  }

  /** How many products. */
  get size() { return this.#list.length; }
  /** A product by id, or undefined. */
  get(id) { return this.#byId.get(id); }
  /** A product by barcode (exact match), or undefined. */
  byBarcode(barcode) { return this.#byBarcode.get(barcode); }
  /** Active products whose name contains `text` (any case) or whose barcode starts with it, by id. */
  search(text, limit = 60) {
    const q = text.trim().toLowerCase();
    const out = [];
    for (const p of this.#list) {
      if (out.length >= limit) break;
      if (p.active && (!q || p.name.toLowerCase().includes(q) || p.barcode.startsWith(q))) out.push(p);
    }
    return out;
  }
  /** Calls `cb(catalogue)` after every replacement; returns a function that stops it. */
  onChange(cb) {
    this.#listeners.add(cb);
    return () => this.#listeners.delete(cb);
  }
}

export class PdcClient {
  #worker;
  #next = 1;
  #waiting = new Map();
  #statusListeners = new Set();
  #lastStatus = null;
  #catalogue = null;
  #loading = null;

  constructor(worker) {
    this.#worker = worker;
    worker.onmessage = (msg) => this.#receive(msg.data);
    worker.onerror = (e) => this.#failAll("worker", e.message ?? "the worker failed");
  }

  /**
   * Starts the worker and opens the engine: `{terminalId, serverUrl, token,
   * datasets?, storeName?, timeoutMs?}`. Rejects with code
   * `open_in_another_tab` when another tab holds the store.
   */
  static async open(config, { workerUrl = new URL("./worker.js", import.meta.url) } = {}) {
    const client = new PdcClient(new Worker(workerUrl, { type: "module" }));
    client.opened = await client.#call("open", config);
    return client;
  }

  #receive(data) {
    if (data?.type === "status") {
      this.#lastStatus = data.status;
      for (const cb of this.#statusListeners) cb(data.status);
      this.#follow(data.status).catch(() => {});
      return;
    }
    if (data?.type === "panic") {
      this.#failAll("panic", data.message);
      return;
    }
    const w = this.#waiting.get(data?.id);
    if (!w) return;
    this.#waiting.delete(data.id);
    if (data.ok) w.resolve(data.value);
    else w.reject(new PdcError(data.error.code, data.error.message));
  }

  #failAll(code, message) {
    for (const w of this.#waiting.values()) w.reject(new PdcError(code, message));
    this.#waiting.clear();
  }

  #call(method, ...args) {
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#waiting.set(id, { resolve, reject });
      this.#worker.postMessage({ id, method, args });
    });
  }

  /** Records a sale `{stream, priority, kind, createdAtMs?, payload: Uint8Array}`; resolves to its local id once durable. */
  record(sale) { return this.#call("record", sale); }
  /** Records many sales in one durable commit. */
  recordMany(sales) { return this.#call("recordMany", sales); }
  /**
   * Records a POS order `{cashierId, lines: [{productId, quantity, unitPriceCents, taxRateBp}],
   * payments: [{method, amountCents}]}`; payments must equal the total.
   * Resolves to `{localId, orderId, seq, receiptNumber, totalCents}` once durable; a sale
   * the server would refuse is refused first (the error code is the rule's, e.g. `total_mismatch`).
   */
  recordOrder(order) { return this.#call("recordOrder", order); }
  /**
   * Pays back part or all of a sale: `{originalOrderId, originalReceipt?, cashierId, lines,
   * payments}` (the lines taken back, the money paid back; `recordOrder`'s shapes and rules).
   * Numbered in the sales' sequence. Resolves to `{localId, refundId, seq, receiptNumber,
   * totalCents}` once durable.
   */
  refundOrder(refund) { return this.#call("refundOrder", refund); }
  /** Records an analytics event (`name` of a-z 0-9 _ .; string properties), low priority. */
  track(name, properties = {}) { return this.#call("track", { name, properties }); }
  /** The pulled catalogue: `[{id, name, barcode, category, priceCents, taxRateBp, active}]`. */
  products() { return this.#call("products"); }
  /** The engine's wasm memory in bytes (its high-water mark: wasm memory never shrinks). */
  memoryBytes() { return this.#call("memoryBytes"); }
  /** Sales waiting to reach the server. */
  pending() { return this.#call("pending"); }
  /** The sync status. */
  status() { return this.#call("status"); }
  /** Calls `cb(status)` after every sync pass; returns an unsubscribe function. */
  onStatus(cb) {
    this.#statusListeners.add(cb);
    if (this.#lastStatus) cb(this.#lastStatus);
    return () => this.#statusListeners.delete(cb);
  }
  /** Runs a sync pass now; resolves to the status after it. */
  syncNow() { return this.#call("syncNow"); }
  /** Pulls the reference datasets (and brings the page's catalogue up to date). */
  async pull() {
    await this.#call("pull");
    await this.#follow(await this.status());
  }
  /** Pulls the store's stock levels now; resolves to how many changed (`null`: the server keeps no stock). */
  pullStock() { return this.#call("pullStock"); }
  /**
   * A product's stock level at this till's store as last pulled (`undefined`:
   * none sent). Advisory: warn on low stock, never refuse the sale for it.
   */
  stockLevel(productId) { return this.#call("stockLevel", productId); }

  /**
   * The products on the page's thread ({@link Catalogue}), loaded at the
   * first call and kept in step with the store from then on.
   */
  async catalogue() {
    if (!this.#catalogue) {
      this.#catalogue = new Catalogue();
      await this.#follow(await this.status());
    }
    return this.#catalogue;
  }

  /** Reloads the page's catalogue when the store holds another products version. */
  async #follow(status) {
    const version = status?.datasets?.products ?? null;
    if (!this.#catalogue || this.#catalogue.version === version) return;
    if (this.#loading) return this.#loading;
    this.#loading = (async () => {
      try {
        this.#catalogue.replace(await this.products(), version);
      } finally {
        this.#loading = null;
      }
    })();
    return this.#loading;
  }
  /** Tells the engine whether the network is up. */
  setOnline(online) { return this.#call("setOnline", online); }
  /** Offline PIN login; resolves to `{userId, role, token, expiresAtMs}`. */
  login(userId, pin) { return this.#call("login", userId, pin); }
  /** Enrols a PIN on this till. */
  enrol(userId, role, pin) { return this.#call("enrol", userId, role, pin); }
  /** A product by id (`{id, name, barcode, category, priceCents, taxRateBp, active}`), or undefined. */
  product(id) { return this.#call("product", id); }
  /** A product by barcode (exact match), or undefined. */
  productByBarcode(barcode) { return this.#call("productByBarcode", barcode); }
  /** A reference record (e.g. a product) by id, as bytes, or undefined. */
  reference(dataset, id) { return this.#call("reference", dataset, id); }
  /** The engine's events since the last call. */
  events() { return this.#call("events"); }
  /** Closes the engine and the worker, releasing the store for another tab. */
  async close() {
    await this.#call("close");
    this.#worker.terminate();
  }
}
