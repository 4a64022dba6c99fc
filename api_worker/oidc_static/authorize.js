// The authorization page: wait for the bot's decision without reloading, send a typed
// code, and follow the redirect the server gives. No framework, no other origin.
(() => {
  "use strict";
  const config = JSON.parse(document.getElementById("config").textContent);
  const t = config.texts;
  const status = document.getElementById("status");
  const codeError = document.getElementById("code-error");
  let finished = false;

  const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function post(path, body) {
    const response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ id: config.id, ...body }),
      credentials: "omit",
      cache: "no-store",
    });
    let data = {};
    try { data = await response.json(); } catch (e) { /* not JSON: keep {} */ }
    return { code: response.status, data, retryAfter: response.headers.get("Retry-After") };
  }

  function finish(url) {
    finished = true;
    status.textContent = t.redirecting;
    window.location.replace(url);
  }

  function expired() {
    finished = true;
    status.textContent = t.expired + " ";
    const again = document.createElement("a");
    again.href = config.again;
    again.textContent = t.again;
    again.id = "again";
    status.appendChild(again);
    document.getElementById("code-form").hidden = true;
  }

  async function waitForDecision() {
    let backoff = 1000;
    while (!finished) {
      let answer;
      try {
        answer = await post(config.wait, { wait: 25 });
      } catch (e) {
        status.textContent = t.offline;
        await pause(backoff);
        backoff = Math.min(backoff * 2, 10000);
        continue;
      }
      if (finished) return;
      if (answer.data.redirect) { finish(answer.data.redirect); return; }
      if (answer.code === 404) { expired(); return; }
      if (answer.code === 200) { backoff = 1000; status.textContent = t.waiting; continue; }
      status.textContent = answer.code === 503 ? t.unavailable : t.offline;
      await pause(backoff);
      backoff = Math.min(backoff * 2, 10000);
    }
  }

  document.getElementById("code-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = document.getElementById("code");
    codeError.textContent = "";
    let answer;
    try {
      answer = await post(config.code, { code: input.value });
    } catch (e) {
      codeError.textContent = t.offline;
      return;
    }
    if (answer.data.redirect) { finish(answer.data.redirect); return; }
    if (answer.code === 404) { expired(); return; }
    const error = answer.data.error;
    if (error === "rate_limited") {
      codeError.textContent = t.rate_limited.replace("$seconds", answer.retryAfter || "60");
    } else if (error === "unavailable") {
      codeError.textContent = t.unavailable;
    } else {
      codeError.textContent = t.invalid_code;
    }
    input.select();
  });

  document.getElementById("copy").addEventListener("click", async (event) => {
    const text = document.getElementById("start-command").textContent;
    try {
      await navigator.clipboard.writeText(text);
      event.target.textContent = t.copied;
    } catch (e) { /* no clipboard: the command is on screen to copy by hand */ }
  });

  waitForDecision();
})();
