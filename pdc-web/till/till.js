// The web till: the pdc engine in a worker behind PdcClient; catalogue,
// cart, payment, receipt, PIN login (online first, offline fallback) and a
// sync status badge. Settings come from the URL (?server=&terminal=&token=)
// or from localStorage after the first visit.
import { PdcClient } from "../js/client.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const saved = JSON.parse(localStorage.getItem("pdc-till") ?? "{}");
const settings = {
  serverUrl: params.get("server") ?? saved.serverUrl ?? location.origin,
  terminalId: params.get("terminal") ?? saved.terminalId ?? "till-1",
  token: params.get("token") ?? saved.token ?? "",
};
localStorage.setItem("pdc-till", JSON.stringify(settings));
const money = (c) => (c / 100).toFixed(2);

let till;
let catalogue = null;
let cart = new Map();
let cashier = null;

function showStatus(s) {
  const badge = $("badge");
  const state = s.halted ? "halted" : s.online && s.failures === 0 ? "online" : "offline";
  badge.className = `badge ${state}`;
  $("badge-state").textContent = s.halted ? `halted: ${s.halted}` : state;
  const [low, normal, high, critical] = s.byPriority;
  $("badge-pending").textContent = s.pending
    ? `${s.pending} to send (${critical} critical, ${high} high, ${normal + low} other)`
    : "all sent";
  $("badge-last").textContent = s.lastSyncAtMs ? `last sync ${new Date(s.lastSyncAtMs).toLocaleTimeString()}` : "";
  badge.title = s.persisted ? "storage persisted" : "storage not persisted: the browser may evict it";
}

function renderProducts() {
  const list = catalogue ? catalogue.search($("search").value, 60) : [];
  $("products").replaceChildren(...list.map((p) => {
    const b = document.createElement("button");
    b.className = "product";
    b.innerHTML = `<div class="name"></div><div class="meta"></div><div class="price"></div>`;
    b.querySelector(".name").textContent = p.name;
    b.querySelector(".meta").textContent = `${p.category} · ${p.barcode}`;
    b.querySelector(".price").textContent = money(p.priceCents);
    b.onclick = () => add(p);
    return b;
  }));
}

// A line that leaves this few units or fewer gets a low-stock hint (the
// levels last pulled; never a reason to refuse the sale).
const LOW_STOCK = 2;

function add(p, n = 1) {
  const line = cart.get(p.id) ?? { product: p, quantity: 0, stock: undefined };
  line.quantity += n;
  if (line.quantity <= 0) cart.delete(p.id);
  else cart.set(p.id, line);
  renderCart();
  till.stockLevel(p.id).then((level) => {
    line.stock = level;
    renderCart();
  }).catch(() => {});
}

function total() {
  let t = 0;
  for (const l of cart.values()) t += l.quantity * l.product.priceCents;
  return t;
}

function renderCart() {
  $("lines").replaceChildren(...[...cart.values()].map((l) => {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.textContent = `${l.quantity} × ${l.product.name}`;
    if (l.stock !== undefined && l.stock !== null && l.stock - l.quantity <= LOW_STOCK) {
      const hint = document.createElement("small");
      hint.className = "low-stock";
      hint.textContent = ` low stock: ${l.stock} on hand`;
      name.append(hint);
    }
    const amount = document.createElement("span");
    amount.textContent = money(l.quantity * l.product.priceCents);
    const controls = document.createElement("span");
    for (const [label, n] of [["−", -1], ["+", 1]]) {
      const b = document.createElement("button");
      b.textContent = label;
      b.onclick = () => add(l.product, n);
      controls.append(b);
    }
    li.append(name, amount, controls);
    return li;
  }));
  $("total").textContent = money(total());
  $("pay-cash").disabled = $("pay-card").disabled = cart.size === 0;
}

async function pay(method) {
  $("sale-error").textContent = "";
  const lines = [...cart.values()].map((l) => ({
    productId: l.product.id, quantity: l.quantity,
    unitPriceCents: l.product.priceCents, taxRateBp: l.product.taxRateBp,
  }));
  try {
    const r = await till.recordOrder({
      cashierId: cashier.number, lines, payments: [{ method, amountCents: total() }],
    });
    const body = [...cart.values()]
      .map((l) => `${String(l.quantity).padStart(3)} ${l.product.name.padEnd(24).slice(0, 24)} ${money(l.quantity * l.product.priceCents).padStart(9)}`)
      .join("\n");
    $("receipt-body").textContent =
      `Receipt ${r.receiptNumber}\nCashier ${cashier.userId}\n${new Date().toLocaleString()}\n\n${body}\n\n` +
      `${"TOTAL".padEnd(28)} ${money(r.totalCents).padStart(9)}\nPaid by ${method}`;
    const s = await till.status();
    $("receipt-state").textContent = s.pending
      ? `Saved on this till; ${s.pending} sale(s) waiting to reach the server.`
      : "Saved and sent to the server.";
    $("receipt").showModal();
    cart = new Map();
    renderCart();
  } catch (e) {
    $("sale-error").textContent = `${e.code}: ${e.message}`;
  }
}

/** A stable number for the order's cashier field, from the user id. */
function cashierNumber(userId) {
  let h = 2166136261;
  for (const ch of userId) h = Math.imul(h ^ ch.charCodeAt(0), 16777619) >>> 0;
  return h;
}

async function login(ev) {
  ev.preventDefault();
  $("login-error").textContent = "";
  const user = $("user").value.trim();
  const pin = $("pin").value;
  // Online first (fresh credentials), offline fallback: the PIN is checked here either way.
  try { await till.pull(); } catch { /* offline: the stored users */ }
  try {
    const l = await till.login(user, pin);
    cashier = { ...l, number: cashierNumber(l.userId) };
    $("cashier").textContent = `${l.userId} (${l.role})`;
    $("login").hidden = true;
    $("till").hidden = false;
    if (!catalogue) {
      catalogue = await till.catalogue();
      catalogue.onChange(renderProducts);
    }
    renderProducts();
    renderCart();
    $("search").focus();
  } catch (e) {
    $("login-error").textContent = e.code === "auth" ? e.message : `${e.code}: ${e.message}`;
  } finally {
    $("pin").value = "";
  }
}

$("login-form").onsubmit = login;
$("search").oninput = renderProducts;
// A scanner types the barcode and Enter: looked up on the page's copy.
$("search").onkeydown = (e) => {
  if (e.key !== "Enter") return;
  const p = catalogue?.byBarcode($("search").value.trim());
  if (p) { add(p); $("search").value = ""; renderProducts(); }
};
$("pay-cash").onclick = () => pay("cash");
$("pay-card").onclick = () => pay("card");
$("receipt-close").onclick = () => { $("receipt").close(); $("search").focus(); };
addEventListener("online", () => till?.setOnline(true));
addEventListener("offline", () => till?.setOnline(false));

// The shell for offline reloads (sw.js). A page without it still works
// online; `window.tillShell` says whether the next reload can be offline.
window.tillShell = "serviceWorker" in navigator
  ? navigator.serviceWorker.register("/sw.js").then(() => navigator.serviceWorker.ready).then(() => "cached")
    .catch((e) => `not cached: ${e.message}`)
  : Promise.resolve("not cached: no service worker in this browser");

try {
  till = await PdcClient.open({ ...settings, datasets: ["products", "users", "config"] });
  till.onStatus(showStatus);
  showStatus(await till.status());
  window.till = till;
  window.tillReady = true;
} catch (e) {
  $("badge-state").textContent = e.code === "open_in_another_tab" ? "open in another tab" : `${e.code}: ${e.message}`;
  $("badge").className = "badge halted";
  $("login").hidden = true;
  window.tillError = e.code;
}
