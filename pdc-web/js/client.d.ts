// Types of client.js: the page's side of the pdc engine.

/** An engine error: `code` says what kind, `message` what happened. */
export class PdcError extends Error {
  readonly code:
    | "open_in_another_tab" | "locked_store" | "not_open" | "already_open" | "panic" | "worker"
    | "item_too_large" | "out_of_range" | "config" | "auth" | "offline"
    // An encrypted store opened without its key, or with a wrong one.
    | "key_required" | "wrong_key"
    // A sale the server would refuse (Order::check): nothing saved.
    | "total_mismatch" | "empty_order" | "negative_line" | "overflow" | "bad_receipt"
    // A card payment offline beyond a limit (take cash, or wait for the link).
    | "offline_card_limit"
    | "transport" | "store" | "sync" | "cache" | "codec" | "monitor" | "engine" | string;
}

export interface OpenConfig {
  terminalId: string;
  serverUrl: string;
  token: string;
  /** Reference datasets to pull (default products, users, config). */
  datasets?: string[];
  /** The OPFS file (default `<terminalId>.pdc`). */
  storeName?: string;
  /** Per-request timeout, ms (default 15,000). */
  timeoutMs?: number;
  /** Largest item saved, encoded bytes (default 1 MiB). */
  maxItemBytes?: number;
  /** redb's page cache, bytes (default 16 MiB). */
  cacheBytes?: number;
  /**
   * The store's 256-bit key, 64 hex digits: the store is encrypted at rest
   * (created so if new; an encrypted store opens only with its key). The
   * host keeps the key as it chooses; pdc never writes it.
   */
  storeKey?: string;
  /** The previous key, while a key rotation is unfinished. */
  previousStoreKey?: string;
}

export type Priority = "low" | "normal" | "high" | "critical";

export interface Sale {
  stream: number;
  priority?: Priority;
  kind: number;
  createdAtMs?: number;
  payload: Uint8Array;
}

export interface Order {
  cashierId: number;
  customerId?: number;
  terminalNumber?: number;
  /** A discount on the whole order, in cents. */
  discountCents?: number;
  lines: {
    productId: number;
    /** Pieces, or thousandths of a measured unit (grams for "kg"). */
    quantity: number;
    unitPriceCents: number;
    taxRateBp?: number;
    discountCents?: number;
    unit?: "each" | "kg" | "l" | "m";
    /** The name printed when it is not the catalogue's (an open item). */
    name?: string;
    note?: string;
  }[];
  payments: {
    /** A known tender, or any other tender's own name (1 to 32 bytes). */
    method: "cash" | "card" | "voucher" | "gift_card" | "mobile_wallet" | "store_credit" | (string & {});
    amountCents: number;
    /** What was handed over (cash): the change is the difference. */
    tenderedCents?: number;
    /** A card authorisation, a voucher or gift-card number. */
    reference?: string;
  }[];
}

export interface Status {
  pending: number;
  online: boolean;
  /** Pending per priority: low, normal, high, critical. */
  byPriority: [number, number, number, number];
  inFlight: number;
  quarantined: number;
  /** Why sending is halted (a whole-request refusal), or null. */
  halted: string | null;
  failures: number;
  /** Wall time of the last fully successful push, ms since the epoch. */
  lastSyncAtMs: number | null;
  bytesUp: number;
  bytesDown: number;
  /** Whether the browser promised to keep the storage. */
  persisted: boolean;
  /** The held version of each followed dataset (null: never pulled). */
  datasets: Record<string, number | null>;
  /** The link as last observed ("unknown" until a probe answers or fails). */
  connection: "unknown" | "online" | "offline" | "slow" | "metered" | "offline_sync";
  /** The latest failure ("push: ...", "ping: ..."), until that operation succeeds. */
  lastError: string | null;
  /** Card payments taken offline and not yet at the server, in cents. */
  offlineCardCents: number;
}

/** The products on the page's thread, kept in step with the store; lookups are synchronous. */
export class Catalogue {
  /** The products dataset version this copy holds (null before the first pull). */
  readonly version: number | null;
  readonly size: number;
  get(id: number): Product | undefined;
  byBarcode(barcode: string): Product | undefined;
  /** Active products whose name contains `text` (any case) or whose barcode starts with it. */
  search(text: string, limit?: number): Product[];
  onChange(cb: (catalogue: Catalogue) => void): () => void;
}

export interface Product {
  id: number; name: string; barcode: string; category: string;
  priceCents: number; taxRateBp: number; active: boolean;
}

export class PdcClient {
  /** What open reported: whether the storage is persisted, and the pending count. */
  readonly opened: { persisted: boolean; pending: number };
  static open(config: OpenConfig, options?: { workerUrl?: URL | string }): Promise<PdcClient>;
  record(sale: Sale): Promise<number>;
  recordMany(sales: Sale[]): Promise<number[]>;
  /** Sells: checked with the server's rules, numbered in the same durable commit. */
  recordOrder(order: Order): Promise<{ localId: number; orderId: string; seq: number; receiptNumber: string; totalCents: number }>;
  /** Pays back (lines taken back, money paid back), naming the original sale; numbered like a sale. */
  refundOrder(refund: Order & { originalOrderId: string; originalReceipt?: string }): Promise<{ localId: number; refundId: string; seq: number; receiptNumber: string; totalCents: number }>;
  /** An analytics event, low priority. */
  track(name: string, properties?: Record<string, string>): Promise<number>;
  products(): Promise<Product[]>;
  /** The products on the page's thread, loaded once and kept up to date. */
  catalogue(): Promise<Catalogue>;
  pending(): Promise<number>;
  status(): Promise<Status>;
  onStatus(cb: (status: Status) => void): () => void;
  syncNow(): Promise<Status>;
  pull(): Promise<void>;
  /** Pulls the store's stock levels; how many changed (`null`: the server keeps no stock). */
  pullStock(): Promise<number | null>;
  /** A product's stock level as last pulled (`undefined`: none sent); advisory only. */
  stockLevel(productId: number): Promise<number | undefined>;
  setOnline(online: boolean): Promise<void>;
  login(userId: string, pin: string): Promise<{ userId: string; role: string; token: string; expiresAtMs: number }>;
  enrol(userId: string, role: string, pin: string): Promise<void>;
  reference(dataset: string, id: number): Promise<Uint8Array | undefined>;
  /** A product by id, or undefined. */
  product(id: number): Promise<Product | undefined>;
  /** A product by barcode (exact match), or undefined. */
  productByBarcode(barcode: string): Promise<Product | undefined>;
  events(): Promise<{ type: string; detail: string }[]>;
  memoryBytes(): Promise<number>;
  close(): Promise<void>;
}
