// The sandbox chat page: a person plays a Telegram user through the /control/ interface.
"use strict";

const $ = (id) => document.getElementById(id);
const FIELDS = ["user-name", "user-id", "user-username", "user-language", "chat-type",
  "group-id", "group-title", "bot-select"];
const TAGS = {
  bold: "strong", italic: "em", underline: "u", strikethrough: "s", code: "code",
  pre: "pre", spoiler: "span", text_link: "a", url: "a", bot_command: "span",
  blockquote: "blockquote",
};

let poll = null;          // AbortController of the running long poll
let version = -1;         // the chat version last rendered
let botUsername = null;
let toastTimer = null;
let pendingStart = null;  // a ?start= payload to send once a bot is there

// -- settings -------------------------------------------------------------------------------

function loadSettings() {
  const saved = JSON.parse(localStorage.getItem("tg-sandbox") || "{}");
  for (const id of FIELDS) if (saved[id] !== undefined && id !== "bot-select") $(id).value = saved[id];
  $("group-fields").hidden = $("chat-type").value !== "group";
}

function saveSettings() {
  const values = {};
  for (const id of FIELDS) values[id] = $(id).value;
  localStorage.setItem("tg-sandbox", JSON.stringify(values));
}

function user() {
  const u = {
    id: Number($("user-id").value) || 1001,
    first_name: $("user-name").value.trim() || "Ann",
    language_code: $("user-language").value,
  };
  const username = $("user-username").value.trim().replace(/^@/, "");
  if (username) u.username = username;
  return u;
}

function chat() {
  if ($("chat-type").value === "group") {
    return { id: Number($("group-id").value) || -100123, type: "group",
      title: $("group-title").value.trim() || "Sandbox group" };
  }
  return { id: user().id, type: "private" };
}

function botParams() {
  const id = $("bot-select").value;
  return id ? { bot_id: id } : {};
}

// -- talking to the sandbox -----------------------------------------------------------------

async function control(path, { body, params, signal } = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params || {})) url.searchParams.set(k, v);
  const response = await fetch(url, {
    method: body ? "POST" : "GET", signal,
    headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(data.message || data.error || response.statusText);
    error.status = response.status;
    throw error;
  }
  return data;
}

async function sendText(text) {
  try {
    await control("/control/messages", { body: { ...botParams(), user: user(), chat: chat(), text } });
  } catch (error) {
    showToast(error.message, true);
  }
}

async function tap(message, button) {
  try {
    const tapped = await control("/control/callback", { body: {
      ...botParams(), user: user(), chat_id: message.chat.id,
      message_id: message.message_id, data: button.callback_data,
    } });
    const answer = await control(`/control/callbacks/${tapped.callback_query_id}`,
      { params: { wait: 10 } }).catch(() => null);
    if (answer && answer.text) {
      if (answer.show_alert) alert(answer.text); else showToast(answer.text);
    }
    if (answer && answer.url) openUrl(answer.url);
  } catch (error) {
    showToast(error.message, true);
  }
}

async function copy(text, element) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = document.createElement("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  const label = element.textContent;
  element.textContent = "Copied";
  element.classList.add("done");
  element.dataset.copied = "true";
  showToast("Copied");
  setTimeout(() => { element.textContent = label; element.classList.remove("done"); }, 1500);
}

function openUrl(href) {
  // a t.me deep link is what Telegram turns into "/start <payload>" in the bot's chat
  try {
    const url = new URL(href);
    const start = url.searchParams.get("start");
    if (["t.me", "telegram.me"].includes(url.hostname) && start !== null) {
      sendText(start ? `/start ${start}` : "/start");
      return;
    }
  } catch { /* not a URL; let the browser decide */ }
  window.open(href, "_blank", "noopener");
}

// -- rendering ------------------------------------------------------------------------------

function renderText(text, entities) {
  // JavaScript strings are UTF-16, like entity offsets, so slicing is exact
  const fragment = document.createDocumentFragment();
  const points = new Set([0, text.length]);
  for (const e of entities) { points.add(e.offset); points.add(e.offset + e.length); }
  const sorted = [...points].filter((p) => p >= 0 && p <= text.length).sort((a, b) => a - b);
  for (let i = 0; i + 1 < sorted.length; i++) {
    const [from, to] = [sorted[i], sorted[i + 1]];
    let node = document.createTextNode(text.slice(from, to));
    const covering = entities.filter((e) => e.offset <= from && e.offset + e.length >= to);
    for (const e of covering.reverse()) {
      const tag = TAGS[e.type];
      if (!tag) continue;
      const el = document.createElement(tag);
      el.dataset.entity = e.type;
      if (e.type === "spoiler") {
        el.className = "spoiler";
        el.addEventListener("click", () => el.classList.toggle("shown"));
      }
      if (e.type === "bot_command") {
        el.className = "command";
        el.addEventListener("click", () => sendText(text.slice(e.offset, e.offset + e.length)));
      }
      if (e.type === "text_link" || e.type === "url") {
        const href = e.url || text.slice(e.offset, e.offset + e.length);
        el.href = href;
        el.addEventListener("click", (event) => { event.preventDefault(); openUrl(href); });
      }
      el.append(node);
      node = el;
    }
    fragment.append(node);
  }
  return fragment;
}

function renderKeyboard(message) {
  const rows = (message.reply_markup && message.reply_markup.inline_keyboard) || [];
  if (!rows.length) return null;
  const keyboard = document.createElement("div");
  keyboard.className = "keyboard";
  keyboard.dataset.testid = "inline-keyboard";
  for (const row of rows) {
    const line = document.createElement("div");
    line.className = "row";
    for (const button of row) {
      const el = document.createElement("button");
      el.type = "button";
      el.textContent = button.text;
      el.dataset.testid = "inline-button";
      if (button.callback_data !== undefined) {
        el.dataset.kind = "callback";
        el.dataset.callbackData = button.callback_data;
        el.addEventListener("click", () => tap(message, button));
      } else if (button.copy_text) {
        el.dataset.kind = "copy_text";
        el.dataset.copyText = button.copy_text.text;
        el.addEventListener("click", () => copy(button.copy_text.text, el));
      } else if (button.url) {
        el.dataset.kind = "url";
        el.dataset.url = button.url;
        el.addEventListener("click", () => openUrl(button.url));
      } else {
        el.dataset.kind = "other";
        el.disabled = true;
      }
      line.append(el);
    }
    keyboard.append(line);
  }
  return keyboard;
}

function renderMessage(message) {
  const item = document.createElement("li");
  item.className = message.from_bot ? "message" : "message mine";
  item.dataset.testid = "message";
  item.dataset.messageId = message.message_id;
  item.dataset.fromBot = message.from_bot;
  item.dataset.edited = message.edited;
  if (chat().type !== "private") {
    const sender = document.createElement("div");
    sender.className = "sender";
    sender.textContent = (message.from && message.from.first_name) || "";
    item.append(sender);
  }
  const text = document.createElement("div");
  text.className = "text";
  text.dataset.testid = "message-text";
  text.append(renderText(message.text || "", message.entities || []));
  item.append(text);
  const keyboard = renderKeyboard(message);
  if (keyboard) item.append(keyboard);
  const meta = document.createElement("div");
  meta.className = "meta";
  const time = new Date((message.edited_at || message.sent_at) * 1000);
  meta.textContent = (message.edited ? "edited " : "") +
    time.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  item.append(meta);
  return item;
}

function render(messages) {
  const list = $("messages");
  const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 40;
  list.replaceChildren(...messages.map(renderMessage));
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function showToast(text, error = false) {
  const toast = $("toast");
  toast.textContent = text;
  toast.classList.toggle("error", error);
  toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { toast.hidden = true; }, 2500);
}

function setStatus(text) { $("status").textContent = text; }

// -- the long poll --------------------------------------------------------------------------

async function refreshBots() {
  const bots = await control("/control/bots").catch(() => []);
  const select = $("bot-select");
  const chosen = select.value;
  select.replaceChildren(new Option("the bot that last called the API", ""));
  for (const bot of bots) select.append(new Option(`@${bot.username} (${bot.id})`, String(bot.id)));
  select.value = bots.some((b) => String(b.id) === chosen) ? chosen : "";
  return bots;
}

async function pollLoop(controller) {
  while (!controller.signal.aborted) {
    try {
      const data = await control(`/control/chats/${chat().id}/messages`, {
        params: { ...botParams(), after: 0, since: version, wait: 25 }, signal: controller.signal,
      });
      botUsername = data.bot.username;
      $("bot-name").textContent = `@${botUsername}`;
      setStatus(data.bot.webhook_url ? "online (webhook)"
        : data.bot.get_updates_pending ? "online (polling)" : "not polling right now");
      if (data.version !== version) { version = data.version; render(data.messages); }
      if (pendingStart !== null) {
        const payload = pendingStart;
        pendingStart = null;
        sendText(`/start ${payload}`);
      }
    } catch (error) {
      if (controller.signal.aborted) return;
      if (error.status === 409 || error.status === 404) {
        setStatus("waiting for a bot to call the Bot API…");
        await refreshBots();
      } else {
        setStatus(`sandbox unreachable (${error.message}); retrying…`);
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }
}

function restart() {
  if (poll) poll.abort();
  version = -1;
  $("messages").replaceChildren();
  poll = new AbortController();
  pollLoop(poll);
}

// -- wiring ---------------------------------------------------------------------------------

function main() {
  loadSettings();
  for (const id of FIELDS) {
    $(id).addEventListener("change", () => {
      $("group-fields").hidden = $("chat-type").value !== "group";
      saveSettings();
      restart();
    });
  }
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("message-input").value;
    if (!text.trim()) return;
    $("message-input").value = "";
    sendText(text);
  });
  refreshBots().then(() => {
    restart();
    // /?start=<payload> behaves like opening https://t.me/<bot>?start=<payload>
    const start = new URLSearchParams(location.search).get("start");
    if (start) {
      history.replaceState(null, "", location.pathname);
      pendingStart = start;
    }
  });
  $("message-input").focus();
}

main();
