// Acme Shop's login box. It talks only to this website's own /demo/... routes;
// the website's server calls the tglogin API with its API key.
"use strict";

const $ = (id) => document.getElementById(id);
let waiting = null;  // AbortController of the running wait for a Telegram approval
let ordering = null;  // AbortController of the running wait for the order's confirmation
let watching = null;  // the timer of the events' next look

async function call(path, body, signal) {
  const options = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  let response;
  try {
    response = await fetch(path, { credentials: "same-origin", signal, ...options });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new Error("The shop can't be reached. Check your connection and try again.");
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(data.message || "Something went wrong. Please try again.");
    error.code = data.error;
    throw error;
  }
  return data;
}

function say(id, text) {
  $(id).textContent = text || "";
  $(id).hidden = !text;
}

function showError(error) {
  if (error.name !== "AbortError") say("error", error.message);
}

function displayName(user) {
  const name = [user.first_name, user.last_name].filter(Boolean).join(" ") || `user ${user.id}`;
  return user.username ? `${name} (@${user.username})` : name;
}

function show(view, user, via) {
  $("loading").hidden = true;
  $("logged-out").hidden = view !== "logged-out";
  $("logged-in").hidden = view !== "logged-in";
  if (user) $("user-name").textContent = displayName(user);
  $("via").hidden = via !== "openid_connect";
}

function loggedIn(user) {
  stopWaiting();
  say("notice", "");
  say("error", "");
  $("code-input").value = "";
  show("logged-in", user);
  watchEvents();
}

// -- Log in with Telegram -------------------------------------------------------------------

function stopWaiting() {
  if (waiting) waiting.abort();
  waiting = null;
  $("telegram-pending").hidden = true;
  $("login-telegram").hidden = false;
}

async function loginWithTelegram() {
  say("error", "");
  say("notice", "");
  stopWaiting();
  $("login-telegram").disabled = true;
  try {
    const started = await call("/demo/login/telegram", {});
    $("deep-link").href = started.deep_link;
    $("start-command").textContent = started.start_command;
    $("sandbox-link").hidden = !started.sandbox_link;
    if (started.sandbox_link) $("sandbox-link").href = started.sandbox_link;
    $("waiting").textContent = "Waiting for you to approve…";
    $("login-telegram").hidden = true;
    $("telegram-pending").hidden = false;
    waitForApproval();
  } catch (error) {
    showError(error);
  } finally {
    $("login-telegram").disabled = false;
  }
}

async function waitForApproval() {
  const controller = new AbortController();
  waiting = controller;
  while (waiting === controller) {
    const asked = Date.now();
    let result;
    try {
      // a long poll: the server answers when the status changes, or after a while
      result = await call("/demo/login/telegram/wait", undefined, controller.signal);
    } catch (error) {
      if (waiting !== controller) return;
      stopWaiting();
      showError(error);
      return;
    }
    if (waiting !== controller) return;
    if (result.status === "approved") return loggedIn(result.user);
    if (result.status === "denied" || result.status === "expired") {
      stopWaiting();
      say("notice", result.status === "denied"
        ? "You denied the login in Telegram. Nothing happened."
        : "That login link has expired. Please start again.");
      return;
    }
    if (Date.now() - asked < 1000) await new Promise((done) => setTimeout(done, 1000));
  }
}

async function copyCommand() {
  const text = $("start-command").textContent;
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const range = document.createRange();
    range.selectNodeContents($("start-command"));
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    document.execCommand("copy");
  }
  $("copy-command").textContent = "Copied";
  setTimeout(() => { $("copy-command").textContent = "Copy"; }, 1500);
}

// -- Enter a code ---------------------------------------------------------------------------

async function loginWithCode(event) {
  event.preventDefault();
  say("error", "");
  say("notice", "");
  const code = $("code-input").value.trim();
  if (!code) return say("error", "Please enter the code the bot sent you.");
  $("code-submit").disabled = true;
  try {
    loggedIn((await call("/demo/login/code", { code })).user);
  } catch (error) {
    showError(error);
  } finally {
    $("code-submit").disabled = false;
  }
}

// -- Log in with OpenID Connect: a plain link to the shop's server, which does the rest ------

function offerOidc(state) {
  // only when the shop has a client at the provider
  $("oidc").hidden = !state.oidc_login;
  if (state.oidc_login) $("login-oidc").href = state.oidc_login;
}

// -- Confirm your order: a push approval in Telegram ---------------------------------------

const ORDER_SAID = {
  approved: "Approved: thank you, your order is on its way.",
  denied: "Denied in Telegram: the order was cancelled.",
  expired: "Expired: nobody confirmed in time. Please try again.",
  undeliverable: "Undeliverable: the bot could not reach you in Telegram (blocked?).",
};

function stopOrdering() {
  if (ordering) ordering.abort();
  ordering = null;
  $("order-waiting").hidden = true;
  $("confirm-order").disabled = false;
}

async function confirmOrder() {
  say("error", "");
  stopOrdering();
  say("order-status", "");
  $("confirm-order").disabled = true;
  try {
    const asked = await call("/demo/order/confirm", {});
    $("order-text").textContent = `Order #${asked.order}`;
    $("order-waiting").hidden = false;
    waitForOrder();
  } catch (error) {
    $("confirm-order").disabled = false;
    showError(error);
  }
}

async function waitForOrder() {
  const controller = new AbortController();
  ordering = controller;
  while (ordering === controller) {
    const asked = Date.now();
    let result;
    try {
      result = await call("/demo/order/wait", undefined, controller.signal);
    } catch (error) {
      if (ordering !== controller) return;
      stopOrdering();
      showError(error);
      return;
    }
    if (ordering !== controller) return;
    if (ORDER_SAID[result.status]) {
      stopOrdering();
      $("order-status").dataset.status = result.status;
      say("order-status", ORDER_SAID[result.status]);
      return;
    }
    if (Date.now() - asked < 1000) await new Promise((done) => setTimeout(done, 1000));
  }
}

// -- the shop's webhook receiver: what it recorded about this visitor, every second --------

function eventItem(event) {
  const item = document.createElement("li");
  item.dataset.testid = "event";
  item.dataset.type = event.type;
  const type = document.createElement("code");
  type.className = "event-type";
  type.textContent = event.type;
  const mark = document.createElement("span");
  mark.className = "verified";
  mark.dataset.testid = "verified";
  mark.textContent = event.verified ? "✓ signature verified" : "";
  const time = document.createElement("time");
  time.textContent = (event.timestamp || "").replace("T", " ").replace("Z", " UTC");
  const what = document.createElement("div");
  what.className = "event-summary";
  what.textContent = event.summary;
  const id = document.createElement("div");
  id.className = "event-id";
  id.textContent = event.id;
  item.append(type, " ", mark, " ", time, what, id);
  return item;
}

function watchEvents() {
  if (watching) clearTimeout(watching);
  watching = setTimeout(lookAtEvents, 0);
}

async function lookAtEvents() {
  watching = null;
  if ($("logged-in").hidden) return;
  try {
    const seen = await call("/demo/events");
    $("events-note").textContent = !seen.configured
      ? "This shop has no webhook configured (make run sets one up when API_KEYS is set)."
      : seen.events.length ? "What tglogin told the shop about you, newest first."
      : "Nothing yet: events appear here as tglogin sends them.";
    $("event-list").replaceChildren(...seen.events.map(eventItem));
  } catch {
    // shown again at the next look
  }
  if (!$("logged-in").hidden) watching = setTimeout(lookAtEvents, 1000);
}

// -- session --------------------------------------------------------------------------------

async function logout() {
  say("error", "");
  $("logout").disabled = true;
  try {
    offerOidc(await call("/demo/logout", {}));
    stopOrdering();
    say("order-status", "");
    $("event-list").replaceChildren();
    show("logged-out");
    say("notice", "You have logged out.");
  } catch (error) {
    showError(error);
  } finally {
    $("logout").disabled = false;
  }
}

async function main() {
  $("login-telegram").addEventListener("click", loginWithTelegram);
  $("cancel-telegram").addEventListener("click", stopWaiting);
  $("copy-command").addEventListener("click", copyCommand);
  $("code-form").addEventListener("submit", loginWithCode);
  $("logout").addEventListener("click", logout);
  $("confirm-order").addEventListener("click", confirmOrder);
  try {
    const state = await call("/demo/session");
    // what a login through OpenID Connect left to say, once
    say("notice", state.notice);
    say("error", state.error);
    if (state.logged_in) {
      show("logged-in", state.user, state.via);
      return watchEvents();
    }
    offerOidc(state);
  } catch (error) {
    showError(error);
  }
  show("logged-out");
}

main();
