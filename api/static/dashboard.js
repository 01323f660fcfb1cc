// slotkeeper dashboard: sign in, draw the day's slots as bars, keep them live over SSE.
// Plain JavaScript, no build step. The token lives in sessionStorage (this tab only).
"use strict";

const TOKEN_KEY = "slotkeeper.token";
const $ = (id) => document.getElementById(id);
const state = { cursor: null, source: null, retry: null, pending: new Set(), timer: null };

function token() { return sessionStorage.getItem(TOKEN_KEY); }
function sleep(ms) { return new Promise((resolve) => setTimeout(resolve, ms)); }

async function api(path, options = {}) {
  const headers = Object.assign({ Accept: "application/json" }, options.headers || {});
  if (token()) headers.Authorization = "Bearer " + token();
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) { signOut("Your session ended; sign in again."); throw new Error("401"); }
  return response;
}

function setStatus(text, live) {
  $("status").textContent = text;
  $("status").classList.toggle("live", Boolean(live));
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  closeStream();
  $("board").hidden = true;
  $("login").hidden = false;
  $("slots").replaceChildren();
  setStatus("signed out");
  const error = $("login-error");
  error.hidden = !message;
  error.textContent = message || "";
}

async function signIn(event) {
  event.preventDefault();
  const error = $("login-error");
  error.hidden = true;
  let response;
  for (let attempt = 1; ; attempt++) {
    response = await fetch("/auth/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ email: $("email").value, password: $("password").value }),
    });
    // A busy or recovering service says when to come back: do so, a few times.
    if (response.status !== 503 || attempt === 3) break;
    await sleep(1000 * Number(response.headers.get("Retry-After") || 1));
  }
  if (!response.ok) {
    const problem = await response.json().catch(() => ({}));
    error.textContent = problem.detail || "Sign-in failed.";
    error.hidden = false;
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, (await response.json()).access_token);
  $("password").value = "";
  await start();
}

async function start() {
  const who = await api("/auth/whoami");
  if (!who.ok || (await who.json()).role !== "admin") {
    signOut("This page is for administrators.");
    return;
  }
  $("login").hidden = true;
  $("board").hidden = false;
  if (!$("day").value) $("day").value = localDay(new Date());
  await loadDay();
}

function localDay(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

function dayQuery() {
  if ($("all-days").checked || !$("day").value) return "";
  const [y, m, d] = $("day").value.split("-").map(Number);
  const from = new Date(y, m - 1, d), to = new Date(y, m - 1, d + 1);
  return `from=${encodeURIComponent(from.toISOString())}&to=${encodeURIComponent(to.toISOString())}`;
}

function inDay(slot) {
  if ($("all-days").checked || !$("day").value) return true;
  if (!slot.starts_at) return false;
  return localDay(new Date(slot.starts_at)) === $("day").value;
}

async function loadDay() {
  closeStream();
  const response = await api("/dashboard/slots?" + dayQuery());
  if (!response.ok) {
    setStatus("could not load slots (" + response.status + ")");
    if (response.status === 503) state.retry = setTimeout(loadDay, 2000);
    return;
  }
  const slots = await response.json();
  state.cursor = response.headers.get("X-Feed-Cursor");
  $("slots").replaceChildren(...slots.map(renderSlot));
  $("empty").hidden = slots.length > 0;
  await openStream();
}

function renderSlot(slot) {
  const item = document.createElement("li");
  item.className = "slot";
  item.dataset.slotId = slot.slot_id;
  item.innerHTML = '<div class="title"><b></b><span class="numbers"></span></div>' +
    '<div class="bar"><div class="seg confirmed"></div><div class="seg held"></div></div>';
  updateSlot(item, slot);
  return item;
}

function updateSlot(item, slot) {
  const when = slot.starts_at ? new Date(slot.starts_at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : "";
  item.querySelector("b").textContent = [`#${slot.slot_id}`, slot.label, when].filter(Boolean).join(" · ");
  item.querySelector(".numbers").textContent =
    `${slot.confirmed} confirmed · ${slot.held} held · ${slot.remaining} left of ${slot.capacity}` +
    (slot.waiting ? ` · ${slot.waiting} waiting` : "") + (slot.state === "closed" ? " · closed" : "");
  const total = Math.max(slot.capacity, slot.confirmed + slot.held, 1);
  item.querySelector(".seg.confirmed").style.width = (100 * slot.confirmed / total) + "%";
  item.querySelector(".seg.held").style.width = (100 * slot.held / total) + "%";
  item.classList.toggle("closed", slot.state === "closed");
  Object.assign(item.dataset, {
    confirmed: slot.confirmed, held: slot.held, remaining: slot.remaining, capacity: slot.capacity,
    waiting: slot.waiting || 0,
  });
}

function closeStream() {
  if (state.source) state.source.close();
  state.source = null;
  clearTimeout(state.retry);
}

async function openStream() {
  closeStream();
  let ticket;
  try {
    const response = await api("/events/stream/ticket", { method: "POST" });
    if (!response.ok) throw new Error(String(response.status));
    ticket = (await response.json()).ticket;
  } catch (error) {
    if (token()) { setStatus("reconnecting…"); state.retry = setTimeout(openStream, 2000); }
    return;
  }
  const query = new URLSearchParams({ ticket });
  if (state.cursor) query.set("after", state.cursor);
  const source = new EventSource("/events/stream?" + query);
  state.source = source;
  source.onopen = () => setStatus("live", true);
  // The ticket only opens the stream: on any error open a new one from the last id seen.
  source.onerror = () => {
    source.close();
    if (state.source !== source) return;
    setStatus("reconnecting…");
    state.retry = setTimeout(openStream, 1000);
  };
  for (const type of document.body.dataset.eventTypes.split(",")) {
    source.addEventListener(type, onEvent);
  }
}

function onEvent(message) {
  state.cursor = message.lastEventId || state.cursor;
  const event = JSON.parse(message.data);
  if (event.slot_id == null) return;
  state.pending.add(event.slot_id);
  // Several events of one slot in a burst cost one read.
  if (!state.timer) state.timer = setTimeout(refreshPending, 50);
}

async function refreshPending() {
  state.timer = null;
  const ids = [...state.pending];
  state.pending.clear();
  for (const id of ids) {
    const response = await api("/dashboard/slots?slot_id=" + id);
    if (!response.ok) continue;
    const [slot] = await response.json();
    let item = document.querySelector(`.slot[data-slot-id="${id}"]`);
    if (!slot || !inDay(slot)) { if (item) item.remove(); continue; }
    if (item) {
      updateSlot(item, slot);
    } else {
      item = renderSlot(slot);
      const after = [...$("slots").children].find((li) => Number(li.dataset.slotId) > slot.slot_id);
      $("slots").insertBefore(item, after || null);
      $("empty").hidden = true;
    }
    item.classList.add("flash");
    setTimeout(() => item.classList.remove("flash"), 400);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", signIn);
  $("logout").addEventListener("click", () => signOut());
  $("day").addEventListener("change", loadDay);
  $("all-days").addEventListener("change", loadDay);
  if (token()) start().catch(() => signOut());
});
