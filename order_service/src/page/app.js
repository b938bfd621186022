// The order page: the same API, the same authentication (a pasted bearer token, or none in the
// loopback mode), no other origin and no library.
"use strict";

const $ = (selector) => document.querySelector(selector);
const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  for (const child of children) node.append(child);
  return node;
};

let token = sessionStorage.getItem("token") || "";
const headers = (extra = {}) => (token ? { ...extra, Authorization: `Bearer ${token}` } : extra);

// Every call: JSON in, JSON out; an error shows the problem the API answered.
async function api(method, path, body) {
  const init = { method, headers: headers(body ? { "content-type": "application/json" } : {}) };
  if (body) init.body = JSON.stringify(body);
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    showProblem({ title: "Network error", detail: String(error) });
    throw error;
  }
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    showProblem(typeof data === "object" ? data : { title: response.statusText, detail: data, status: response.status });
    throw Object.assign(new Error(`${response.status}`), { problem: data });
  }
  return data;
}

function showProblem(problem) {
  const box = $("#problem");
  box.replaceChildren(el("strong", { textContent: `${problem.status || ""} ${problem.title || "Error"}`.trim() }),
    el("div", { textContent: problem.detail || "" }));
  // One error is the detail already; several are listed.
  if (Array.isArray(problem.errors) && problem.errors.length > 1) {
    box.append(el("ul", {}, ...problem.errors.map((e) => el("li", { textContent: `${e.field}: ${e.message}` }))));
  }
  box.hidden = false;
  markFields(problem);
}

function clearProblem() {
  $("#problem").hidden = true;
  for (const node of document.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
}

// The fields a problem names, in the order form: `customer_id`, `items[2].price`, ...
function markFields(problem) {
  const fields = (problem.errors || []).map((e) => e.field).concat(problem.field ? [problem.field] : []);
  for (const field of fields) {
    const line = /^items\[(\d+)\]\.(\w+)$/.exec(field);
    const input = line
      ? document.querySelectorAll("#lines .line")[Number(line[1])]?.querySelector(`[name="${line[2]}"]`)
      : document.getElementById(field);
    if (input) input.setAttribute("aria-invalid", "true");
  }
}

// --- the order form -------------------------------------------------------------------------
let lineCount = 0;
function addLine() {
  const n = ++lineCount;
  const field = (name, label, placeholder, mode) => el("div", { className: "field" },
    el("label", { htmlFor: `line-${n}-${name}`, textContent: label }),
    el("input", { id: `line-${n}-${name}`, name, placeholder, inputMode: mode, autocomplete: "off" }));
  const remove = el("button", { type: "button", textContent: "Remove", ariaLabel: `Remove line ${n}` });
  const line = el("div", { className: "line" },
    field("product_id", "Product", "product-1", "text"),
    field("quantity", "Quantity", "1", "numeric"),
    field("price", "Price", "10.00", "decimal"), remove);
  remove.addEventListener("click", () => { line.remove(); });
  $("#lines").append(line);
  return line;
}

async function placeOrder(event) {
  event.preventDefault();
  clearProblem();
  const items = [...document.querySelectorAll("#lines .line")].map((line) => {
    const value = (name) => line.querySelector(`[name="${name}"]`).value.trim();
    const quantity = value("quantity");
    // Sent as typed: the API reads numbers exactly and says what is wrong with them.
    return { product_id: value("product_id"), quantity: /^\d+$/.test(quantity) ? Number(quantity) : quantity, price: value("price") };
  });
  const body = { items };
  const customer = $("#customer_id").value.trim();
  if (customer) body.customer_id = customer;
  const order = await api("POST", "/orders", body).catch(() => null);
  if (!order) return;
  $("#placed").textContent = `Order ${order.id} placed: ${order.status}.`;
  upsertRow(order, true);
}

// --- the list -------------------------------------------------------------------------------
const rows = new Map();
// The newest change seen of each order: a change can arrive before the answer that shows the
// order (its POST, a page of the list).
const latest = new Map();
let nextCursor = null;

function statusCell(status) {
  return el("span", { className: `status status-${status}`, textContent: status });
}

function upsertRow(answered, first = false) {
  const change = latest.get(answered.id);
  const order = change && Date.parse(change.at) >= Date.parse(answered.updated_at) ? { ...answered, status: change.status } : answered;
  let row = rows.get(order.id);
  if (!row) {
    row = el("tr", { id: `order-${order.id}` });
    rows.set(order.id, row);
    const body = $("#orders tbody");
    if (first) body.prepend(row); else body.append(row);
  }
  row.dataset.status = order.status;
  const cancel = el("button", { type: "button", textContent: "Cancel", ariaLabel: `Cancel order ${order.id}` });
  cancel.addEventListener("click", () => cancelOrder(order.id));
  row.replaceChildren(
    el("td", {}, el("code", { textContent: order.id })),
    el("td", { textContent: order.customer_id }),
    el("td", { textContent: order.total_amount }),
    el("td", { className: "status-cell" }, statusCell(order.status)),
    el("td", { textContent: new Date(order.created_at).toLocaleString() }),
    el("td", {}, ...(order.status === "pending" ? [cancel] : [])),
  );
}

async function listOrders(event, after) {
  if (event) event.preventDefault();
  clearProblem();
  const query = new URLSearchParams({ limit: $("#filter-limit").value });
  if ($("#filter-status").value) query.set("status", $("#filter-status").value);
  if ($("#filter-customer").value.trim()) query.set("customer_id", $("#filter-customer").value.trim());
  if (after) query.set("after", after);
  const page = await api("GET", `/orders?${query}`).catch(() => null);
  if (!page) return;
  if (!after) { rows.clear(); $("#orders tbody").replaceChildren(); }
  for (const order of page.items) upsertRow(order);
  nextCursor = page.next_cursor;
  $("#next-page").hidden = !nextCursor;
}

async function cancelOrder(id) {
  clearProblem();
  const order = await api("POST", `/orders/${id}/cancel`).catch(() => null);
  if (order) { upsertRow(order); if ($("#found").dataset.id === id) findOrder(null, id); }
}

async function findOrder(event, known) {
  if (event) event.preventDefault();
  clearProblem();
  const id = known || $("#find-id").value.trim();
  const order = await api("GET", `/orders/${encodeURIComponent(id)}`).catch(() => null);
  const found = $("#found");
  if (!order) { found.replaceChildren(); return; }
  const history = await api("GET", `/orders/${id}/history`).catch(() => []);
  found.dataset.id = id;
  const card = el("div", { className: "card", id: "found-card" },
    el("p", {}, el("code", { textContent: order.id }), " ", statusCell(order.status), ` · ${order.total_amount} · ${order.customer_id}`),
    el("ol", {}, ...history.map((h) => el("li", { textContent: `${h.status} at ${new Date(h.at).toLocaleString()}${h.reason ? ` (${h.reason})` : ""}` }))));
  if (order.status === "pending") {
    const cancel = el("button", { type: "button", textContent: "Cancel this order" });
    cancel.addEventListener("click", () => cancelOrder(order.id));
    card.append(cancel);
  }
  found.replaceChildren(card);
}

// --- live status: Server-Sent Events over fetch, so that the token goes in a header ---------
let lastEventId = null;
let following = null;

async function follow() {
  if (following) following.abort();
  const controller = new AbortController();
  following = controller;
  const requestHeaders = headers({ Accept: "text/event-stream" });
  if (lastEventId) requestHeaders["Last-Event-ID"] = lastEventId;
  try {
    const response = await fetch("/orders/events", { headers: requestHeaders, signal: controller.signal });
    if (!response.ok) throw new Error(`${response.status}`);
    $("#live").textContent = "Live status: connected.";
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        onEvent(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  } catch (error) {
    if (controller.signal.aborted) return;
  }
  if (following !== controller) return;
  $("#live").textContent = "Live status: reconnecting…";
  setTimeout(follow, 2000);
}

function onEvent(block) {
  let type = "message";
  const data = [];
  for (const line of block.split("\n")) {
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "id") lastEventId = value;
    else if (field === "event") type = value;
    else if (field === "data") data.push(value);
  }
  if (type !== "status" || !data.length) return;
  const change = JSON.parse(data.join("\n"));
  const known = latest.get(change.order_id);
  if (!known || known.seq < change.seq) latest.set(change.order_id, change);
  const row = rows.get(change.order_id);
  if (row) {
    row.dataset.status = change.status;
    row.querySelector(".status-cell").replaceChildren(statusCell(change.status));
    if (change.status !== "pending") row.lastElementChild.replaceChildren();
  }
  if ($("#found").dataset.id === change.order_id) findOrder(null, change.order_id);
}

// --- the operator view ------------------------------------------------------------------------
async function showFigures(event) {
  if (event) event.preventDefault();
  clearProblem();
  const query = new URLSearchParams();
  for (const name of ["since", "until"]) {
    const value = $(`#${name}`).value;
    if (value) query.set(name, new Date(value).toISOString());
  }
  const figures = await api("GET", `/stats?${query}`).catch(() => null);
  if (!figures) return;
  const item = (label, value) => el("div", {}, el("dt", { textContent: label }), el("dd", { textContent: String(value ?? "–") }));
  const s = figures.by_status;
  const latency = figures.create_to_decision;
  $("#figures").replaceChildren(
    item("Orders", figures.orders), item("Pending", s.pending), item("Completed", s.completed),
    item("Rejected", s.rejected), item("Failed", s.failed), item("Cancelled", s.cancelled),
    item("Revenue (completed)", figures.completed_revenue), item("Orders / minute", figures.orders_per_minute),
    item("Create→decision p50 (ms)", latency.p50_ms), item("p99 (ms)", latency.p99_ms));
}

const QUEUES = [
  { name: "order.created (processor)", base: "/processor/dead-letters" },
  { name: "order.processed (order service)", base: "/dead-letters" },
];

async function showDeadLetters() {
  const box = $("#dead-letters");
  box.replaceChildren();
  for (const queue of QUEUES) {
    const letters = await api("GET", queue.base).catch(() => null);
    const section = el("div", { className: "card" }, el("h3", { textContent: queue.name }));
    if (!letters) { box.append(section); continue; }
    const all = el("button", { type: "button", textContent: `Replay all of ${queue.name}` });
    all.addEventListener("click", () => replay(queue, null));
    const table = el("table", {}, el("thead", {}, el("tr", {}, ...["Order", "Reason", "Attempts", "Last failed", ""].map((t) => el("th", { textContent: t })))));
    const body = el("tbody");
    for (const letter of letters) {
      const one = el("button", { type: "button", textContent: "Replay", ariaLabel: `Replay order ${letter.order_id}` });
      one.addEventListener("click", () => replay(queue, [letter.order_id]));
      body.append(el("tr", {},
        el("td", {}, el("code", { textContent: letter.order_id || "(poison)" })),
        el("td", { textContent: letter.reason }),
        el("td", { textContent: String(letter.attempts) }),
        el("td", { textContent: letter.last_failed_at ? new Date(letter.last_failed_at).toLocaleString() : "" }),
        el("td", {}, ...(letter.order_id && !letter.poison ? [one] : []))));
    }
    table.append(body);
    section.append(el("p", { textContent: `${letters.length} dead letter(s)` }), el("div", { className: "scroll" }, table), all);
    box.append(section);
  }
}

async function replay(queue, orderIds) {
  clearProblem();
  const result = await api("POST", `${queue.base}/replay`, orderIds ? { order_ids: orderIds } : {}).catch(() => null);
  if (result) { $("#operator-status").textContent = `${result.replayed} replayed from ${queue.name}.`; showDeadLetters(); }
}

function select(view) {
  for (const name of ["customer", "operator"]) {
    $(`#${name}`).hidden = name !== view;
    $(`#tab-${name}`).setAttribute("aria-selected", String(name === view));
  }
  if (view === "operator") { showFigures(); showDeadLetters(); }
}

document.addEventListener("DOMContentLoaded", () => {
  $("#token").value = token;
  $("#auth").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("#token").value.trim();
    sessionStorage.setItem("token", token);
    $("#who").textContent = token ? "Token set." : "No token: loopback mode.";
    lastEventId = null;
    follow();
    listOrders();
  });
  $("#add-line").addEventListener("click", () => addLine().querySelector("input").focus());
  $("#place").addEventListener("submit", placeOrder);
  $("#find").addEventListener("submit", findOrder);
  $("#filters").addEventListener("submit", listOrders);
  $("#next-page").addEventListener("click", () => listOrders(null, nextCursor));
  $("#figures-form").addEventListener("submit", showFigures);
  $("#tab-customer").addEventListener("click", () => select("customer"));
  $("#tab-operator").addEventListener("click", () => select("operator"));
  addLine();
  follow();
  listOrders();
});
