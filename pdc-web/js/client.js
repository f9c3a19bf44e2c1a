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

export class PdcClient {
  #worker;
  #next = 1;
  #waiting = new Map();
  #statusListeners = new Set();
  #lastStatus = null;

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
   * payments: [{method, amountCents}]}`; payments must equal the total (`payment_mismatch`).
   * Resolves to `{localId, orderId, totalCents}` once durable.
   */
  recordOrder(order) { return this.#call("recordOrder", order); }
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
  /** Pulls the reference datasets. */
  pull() { return this.#call("pull"); }
  /** Tells the engine whether the network is up. */
  setOnline(online) { return this.#call("setOnline", online); }
  /** Offline PIN login; resolves to `{userId, role, token, expiresAtMs}`. */
  login(userId, pin) { return this.#call("login", userId, pin); }
  /** Enrols a PIN on this till. */
  enrol(userId, role, pin) { return this.#call("enrol", userId, role, pin); }
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
