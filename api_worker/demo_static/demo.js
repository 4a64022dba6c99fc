// Acme Shop's login box. It talks only to this website's own /demo/... routes;
// the website's server calls the tglogin API with its API key.
"use strict";

const $ = (id) => document.getElementById(id);
let waiting = null;  // AbortController of the running wait for a Telegram approval

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

// -- session --------------------------------------------------------------------------------

async function logout() {
  say("error", "");
  $("logout").disabled = true;
  try {
    offerOidc(await call("/demo/logout", {}));
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
  try {
    const state = await call("/demo/session");
    // what a login through OpenID Connect left to say, once
    say("notice", state.notice);
    say("error", state.error);
    if (state.logged_in) return show("logged-in", state.user, state.via);
    offerOidc(state);
  } catch (error) {
    showError(error);
  }
  show("logged-out");
}

main();
