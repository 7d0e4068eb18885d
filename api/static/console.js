// Cody console: plain JS, no build step. Views (by URL hash): #/ runs list, #/runs/<id> one
// run, #/threads/<id> a thread and a box for its next turn (#/threads/new starts one).
//
// Streams: EventSource on the run's events_url (the browser resends Last-Event-ID when it
// reconnects by itself); if the browser gives up, the stream is reopened with ?after=<last id>.
// Every event is shown once: events are deduplicated by seq. With an API key (asked for on a
// 401, kept in this page's memory only, never in a URL or storage) requests carry
// "Authorization: Bearer"; a stream uses the signed events_url the submit returned (its
// ?token is used as is), or, without one, a fetch() stream that sends the key as a header.
"use strict";
(() => {
  const EVENT_TYPES = ["response_start", "item_start", "item_delta", "item_done", "item_error",
    "item_cancelled", "usage_update", "response_done", "response_error",
    "turn_aborted_by_user", "heartbeat"];
  const TERMINAL_EVENTS = new Set(["response_done", "response_error"]);
  const TERMINAL = new Set(["complete", "error", "aborted"]);
  const POLL_MS = 1500;

  const state = {
    key: null,           // the API key: memory only
    keyPrompt: null,     // the pending "ask for a key" promise
    eventsUrls: new Map(),  // run id -> events_url from its submit (may carry ?token)
    cleanups: [],        // what the current view must stop when the view changes
    skipRender: false,
  };

  // ------------------------------------------------------------------ helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const short = (id) => (id || "").slice(0, 8);
  function setConn(text) { document.getElementById("conn").textContent = text; }
  function fmtMs(ms) {
    if (ms === null || ms === undefined) return "–";
    return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
  }
  function usageText(u) {
    if (!u) return "";
    return `tokens: ${u.prompt_tokens} in, ${u.completion_tokens} out, ${u.total_tokens} total`;
  }

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  function askKey() {
    if (state.keyPrompt) return state.keyPrompt;
    const dialog = document.getElementById("key-dialog");
    const input = document.getElementById("key-input");
    state.keyPrompt = new Promise((resolve) => {
      document.getElementById("key-form").onsubmit = (e) => {
        e.preventDefault();
        state.key = input.value.trim() || null;
        input.value = "";
        dialog.close();
        state.keyPrompt = null;
        resolve();
      };
      if (!dialog.open) dialog.showModal();
    });
    return state.keyPrompt;
  }

  async function api(path, opts = {}) {
    for (let attempt = 0; ; attempt++) {
      const headers = Object.assign({}, opts.headers || {});
      if (state.key) headers["Authorization"] = "Bearer " + state.key;
      let body;
      if (opts.json !== undefined) {
        headers["Content-Type"] = "application/json";
        body = JSON.stringify(opts.json);
      }
      const r = await fetch(path, { method: opts.method || "GET", headers, body });
      if (r.status === 401 && attempt < 5) { await askKey(); continue; }
      if (!r.ok && !(opts.allow || []).includes(r.status)) {
        let message = `${r.status} ${r.statusText}`;
        try {
          const b = await r.json();
          if (b.error) message = `${b.error.code}: ${b.error.message}`;
        } catch (_) { /* not JSON */ }
        throw new ApiError(r.status, message);
      }
      return r;
    }
  }

  function onCleanup(fn) { state.cleanups.push(fn); }

  // ------------------------------------------------------------------ one run's stream

  class RunStream {
    constructor(runId, url, handlers) {
      this.runId = runId;
      this.url = url || `/api/v2/runs/${runId}/events`;
      this.handlers = handlers;
      this.lastSeq = 0;      // dedupe: an event at or below this seq was shown already
      this.lastId = null;    // the last entry id seen, to resume after
      this.ended = false;
      this.closed = false;
      this.reopens = 0;
      this.es = null;
      this.abort = null;
    }

    start() {
      if (state.key && !/[?&]token=/.test(this.url)) this.fetchLoop();
      else this.openEventSource();
      return this;
    }

    close() {
      this.closed = true;
      if (this.es) this.es.close();
      if (this.abort) this.abort.abort();
    }

    urlAfter() {
      if (!this.lastId) return this.url;
      return this.url + (this.url.includes("?") ? "&" : "?") + "after=" +
        encodeURIComponent(this.lastId);
    }

    openEventSource() {
      const es = this.es = new EventSource(this.urlAfter());
      for (const t of EVENT_TYPES) {
        es.addEventListener(t, (m) => this.message(m.data, m.lastEventId));
      }
      es.onopen = () => { this.reopens = 0; this.conn(true); };
      es.onerror = () => {
        if (this.closed || this.ended) return;
        this.conn(false);
        if (es.readyState === EventSource.CLOSED) {  // the browser gave up: reopen ourselves
          es.close();
          if (++this.reopens > 20) { this.handlers.onGiveUp && this.handlers.onGiveUp(); return; }
          setTimeout(() => { if (!this.closed && !this.ended) this.openEventSource(); }, 1000);
        }
      };
    }

    async fetchLoop() {
      while (!this.closed && !this.ended) {
        const headers = { Accept: "text/event-stream" };
        if (state.key) headers["Authorization"] = "Bearer " + state.key;
        if (this.lastId) headers["Last-Event-ID"] = this.lastId;
        try {
          this.abort = new AbortController();
          const r = await fetch(this.url, { headers, signal: this.abort.signal });
          if (r.status === 204) { this.ended = true; break; }
          if (r.status === 401) { await askKey(); continue; }
          if (!r.ok) throw new ApiError(r.status, r.statusText);
          this.conn(true);
          const reader = r.body.getReader();
          const decoder = new TextDecoder();
          let buf = "";
          for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            buf = this.parse(buf + decoder.decode(value, { stream: true }));
            if (this.ended) { this.abort.abort(); break; }
          }
        } catch (_) {
          if (this.closed) return;
        }
        if (this.ended || this.closed) break;
        this.conn(false);
        await sleep(1000);
      }
    }

    parse(buf) {
      buf = buf.replace(/\r\n?/g, "\n");
      let cut;
      while ((cut = buf.indexOf("\n\n")) !== -1) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        let id = null;
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon === -1 ? line : line.slice(0, colon);
          let value = colon === -1 ? "" : line.slice(colon + 1);
          if (value.startsWith(" ")) value = value.slice(1);
          if (field === "id") id = value;
          else if (field === "data") data.push(value);
        }
        if (data.length) this.message(data.join("\n"), id);
      }
      return buf;
    }

    message(data, id) {
      let ev;
      try { ev = JSON.parse(data); } catch (_) { return; }
      if (typeof ev.seq !== "number" || ev.seq <= this.lastSeq) return;  // seen: skip
      this.lastSeq = ev.seq;
      if (id) this.lastId = id;
      this.handlers.onEvent(ev);
      if (TERMINAL_EVENTS.has(ev.type)) {
        this.ended = true;
        if (this.es) this.es.close();
        this.conn(true);
      }
    }

    conn(up) { this.handlers.onConn && this.handlers.onConn(up); }
  }

  // ------------------------------------------------------------------ one turn, rendered

  class TurnView {
    constructor(runId, { withCancel = true, threadLink = false } = {}) {
      this.runId = runId;
      this.items = new Map();
      this.status = el("span", { class: "status", "data-testid": "status" });
      this.model = el("span", { class: "mono", "data-testid": "model" });
      this.usage = el("span", { class: "usage", "data-testid": "usage" });
      this.cancelButton = withCancel ? el("button", {
        "data-testid": "cancel", onclick: () => this.cancel(),
      }, "Cancel") : null;
      this.threadLink = threadLink ? el("a", { "data-testid": "thread-link" }, "thread") : null;
      this.body = el("div", { "data-testid": "items" });
      this.errors = el("div", { class: "error-box", "data-testid": "run-error" });
      this.root = el("section", { class: "turn", "data-testid": "turn", "data-run-id": runId },
        el("div", { class: "turn-head" }, this.status,
          el("a", { href: `#/runs/${runId}`, class: "mono" }, short(runId)), this.model,
          this.threadLink, this.usage, this.cancelButton),
        this.body, this.errors);
      this.setStatus("queued");
    }

    setStatus(status) {
      this.status.textContent = status;
      this.status.className = "status " + status;
      this.root.dataset.status = status;
      if (this.cancelButton) this.cancelButton.hidden = TERMINAL.has(status);
    }

    setThread(threadId) {
      if (this.threadLink) this.threadLink.href = `#/threads/${threadId}`;
    }

    async cancel() {
      this.cancelButton.disabled = true;
      try {
        const r = await api(`/api/v2/runs/${this.runId}/cancel`, { method: "POST" });
        const resp = await r.json();
        // a live stream shows the ending itself; without one, show the Response
        if ((!this.stream || this.stream.closed) && TERMINAL.has(resp.status)) {
          this.renderResponse(resp);
        }
      } catch (e) {
        this.errors.textContent = `cancel failed: ${e.message}`;
      } finally {
        this.cancelButton.disabled = false;
      }
    }

    stream_(url) {
      this.stream = new RunStream(this.runId, url, {
        onEvent: (ev) => this.event(ev),
        onConn: (up) => setConn(up ? "" : "reconnecting…"),
        onGiveUp: () => this.refetch(),
      }).start();
      onCleanup(() => this.stream.close());
      return this;
    }

    async refetch() {
      try {
        this.renderResponse(await (await api(`/api/v2/runs/${this.runId}`)).json());
      } catch (e) { this.errors.textContent = e.message; }
    }

    renderResponse(resp) {
      this.body.replaceChildren();
      this.items.clear();
      this.model.textContent = resp.model_id;
      this.setThread(resp.thread_id);
      for (const item of resp.output_items) this.done(item);
      this.usage.textContent = usageText(resp.usage);
      if (resp.error) this.errors.textContent = `${resp.error.code}: ${resp.error.message}`;
      this.setStatus(resp.status);
    }

    item(id, type, origin) {
      let entry = this.items.get(id);
      if (entry) return entry;
      let node, text, extra = null;
      if (type === "message" && origin === "user") {
        node = text = el("div", { class: "item prompt", "data-testid": "prompt" });
      } else if (type === "message") {
        text = el("div", { class: "text", "data-testid": "message-text" });
        node = el("div", { class: "item message" }, text);
      } else if (type === "reasoning") {
        text = el("div", { class: "text", "data-testid": "reasoning-text" });
        extra = el("span", { class: "marker", "data-testid": "reasoning-marker", hidden: true });
        node = el("div", { class: "item reasoning", "data-testid": "reasoning" },
          el("details", {}, el("summary", {}, "Thinking", extra), text));
      } else if (type === "function_call") {
        extra = el("span", { class: "name", "data-testid": "tool-name" });
        text = el("span", { class: "args", "data-testid": "tool-args" });
        node = el("div", { class: "item function_call", "data-testid": "tool-call" },
          "→ ", extra, "(", text, ")");
      } else if (type === "function_call_output") {
        text = el("span", { "data-testid": "tool-output-text" });
        node = el("div", { class: "item function_call_output", "data-testid": "tool-output" },
          "← ", text);
      } else if (type === "error") {
        node = text = el("div", { class: "item error", "data-testid": "item-error" });
      } else {
        node = text = el("div", { class: `item ${type}`, "data-testid": `item-${type}` });
      }
      node.dataset.itemId = id;
      this.body.append(node);
      entry = { node, text, extra, type };
      this.items.set(id, entry);
      return entry;
    }

    done(item) {
      const e = this.item(item.id, item.type, item.origin);
      if (item.type === "message" || item.type === "reasoning") {
        e.text.textContent = item.content;
      }
      if (item.type === "reasoning") {
        const mark = item.redacted ? "redacted" : (item.encrypted_content ? "encrypted" : "");
        e.extra.textContent = mark;
        e.extra.hidden = !mark;
        e.node.dataset.marker = mark;
      } else if (item.type === "function_call") {
        e.extra.textContent = item.name;
        e.text.textContent = item.arguments;
      } else if (item.type === "function_call_output") {
        e.text.textContent = item.output;
        e.node.classList.toggle("failed", !item.success);
        e.node.dataset.success = String(item.success);
      } else if (item.type === "error") {
        e.text.textContent = `${item.code}: ${item.message}`;
      } else if (item.type === "cancelled") {
        e.text.textContent = `cancelled${item.reason ? ": " + item.reason : ""}`;
      }
      e.node.dataset.done = "true";
    }

    event(ev) {
      const p = ev.payload;
      switch (p.type) {
        case "response_start":
          this.model.textContent = p.model_id;
          this.setThread(p.thread_id);
          this.setStatus("in_progress");
          break;
        case "item_start": {
          // the user's prompt is the item <run id>:prompt (its item_done says origin user)
          const origin = p.item_id === `${this.runId}:prompt` ? "user" : "agent";
          const e = this.item(p.item_id, p.item_type, origin);
          if (p.item_type === "function_call" && p.name) e.extra.textContent = p.name;
          if (p.initial_content) e.text.textContent = p.initial_content;
          if (p.arguments) e.text.textContent = p.arguments;
          break;
        }
        case "item_delta": {
          const e = this.items.get(p.item_id) || this.item(p.item_id, "message", "agent");
          e.text.append(p.delta_content);
          break;
        }
        case "item_done": this.done(p.final_item); break;
        case "item_error": {
          const e = this.items.get(p.item_id);
          const line = el("div", { class: "item error", "data-testid": "item-error" },
            `${p.error.code}: ${p.error.message}`);
          if (e) e.node.after(line); else this.body.append(line);
          break;
        }
        case "item_cancelled": {
          const e = this.items.get(p.item_id);
          if (e) e.node.dataset.cancelled = "true";
          break;
        }
        case "usage_update": this.usage.textContent = usageText(p.usage); break;
        case "response_done":
          if (p.usage) this.usage.textContent = usageText(p.usage);
          this.setStatus(p.status);
          break;
        case "response_error":
          this.errors.textContent = `${p.error.code}: ${p.error.message}`;
          this.setStatus("error");
          break;
        case "turn_aborted_by_user":
          this.errors.textContent = `aborted: ${p.reason}`;
          break;
        default: break;
      }
    }
  }

  // ------------------------------------------------------------------ views

  const view = () => document.getElementById("view");

  async function showRuns() {
    const body = el("tbody", { "data-testid": "runs-body" });
    view().replaceChildren(el("h2", {}, "Runs"), el("table", { "data-testid": "runs-table" },
      el("thead", {}, el("tr", {}, ...["status", "run", "model", "thread", "tokens",
        "duration", "created"].map((h) => el("th", {}, h)))), body));
    let stopped = false;
    onCleanup(() => { stopped = true; });
    while (!stopped) {
      try {
        const page = await (await api("/api/v2/runs?limit=50")).json();
        if (stopped) break;
        body.replaceChildren(...page.data.map(runRow));
        setConn("");
      } catch (e) {
        setConn(e instanceof ApiError ? e.message : "server unreachable; retrying");
      }
      await sleep(POLL_MS);
    }
  }

  function runRow(r) {
    const live = !TERMINAL.has(r.status);
    const duration = live ? Date.now() - r.created_at : r.duration_ms;
    return el("tr", { "data-run-id": r.run_id, "data-status": r.status },
      el("td", { class: `status ${r.status}`, "data-testid": "row-status" }, r.status),
      el("td", { class: "mono" }, el("a", { href: `#/runs/${r.run_id}` }, short(r.run_id))),
      el("td", { class: "mono" }, r.model),
      el("td", { class: "mono" }, el("a", { href: `#/threads/${r.thread_id}` },
        short(r.thread_id))),
      el("td", { "data-testid": "row-tokens" }, r.usage ? String(r.usage.total_tokens) : "–"),
      el("td", {}, fmtMs(duration) + (live ? "…" : "")),
      el("td", {}, new Date(r.created_at).toLocaleTimeString()));
  }

  async function showRun(runId) {
    const turn = new TurnView(runId, { threadLink: true });
    view().replaceChildren(el("h2", {}, "Run ", el("span", { class: "mono" }, runId)),
      turn.root);
    const resp = await (await api(`/api/v2/runs/${runId}`)).json();
    if (TERMINAL.has(resp.status)) turn.renderResponse(resp);
    else turn.stream_(state.eventsUrls.get(runId));
  }

  async function modelPicker() {
    try {
      const r = await api("/api/v2/models", { allow: [404] });
      if (r.status === 404) throw new ApiError(404, "no models route");
      const models = (await r.json()).data || [];
      return el("select", { "data-testid": "model-select", "aria-label": "model" },
        el("option", { value: "" }, "server default"),
        // a model whose provider has no key stays selectable: a replay server plays it
        // anyway, and a live one answers PROVIDER_NOT_CONFIGURED, which the page shows
        ...models.map((m) => el("option", { value: m.id },
          `${m.id} (${m.provider}${m.key === "missing" ? ", no key" : ""})`)));
    } catch (_) {
      return el("input", { "data-testid": "model-input", "aria-label": "model",
        placeholder: "model (empty: server default)" });
    }
  }

  async function showThread(threadId) {
    let current = threadId === "new" ? null : threadId;
    const turns = el("div", { "data-testid": "turns" });
    const title = el("h2", { "data-testid": "thread-title" },
      current ? `Thread ${current}` : "New thread");
    const prompt = el("textarea", { "data-testid": "prompt-input", placeholder: "Next turn…" });
    const picker = await modelPicker();
    const error = el("div", { class: "error-box", "data-testid": "send-error" });
    const send = el("button", { "data-testid": "send" }, "Send");
    view().replaceChildren(title, turns,
      el("div", { class: "composer" }, prompt, picker, send), error);
    if (current) {
      const data = await (await api(`/api/v2/threads/${current}`)).json();
      if (data.thread.title) title.textContent = data.thread.title;
      for (const resp of data.runs) {
        const turn = new TurnView(resp.id);
        turns.append(turn.root);
        if (TERMINAL.has(resp.status)) turn.renderResponse(resp);
        else turn.stream_(state.eventsUrls.get(resp.id));
      }
    }
    send.addEventListener("click", async () => {
      const text = prompt.value;
      if (!text.trim()) return;
      const body = { prompt: text };
      if (picker.value) body.model = picker.value;
      if (current) body.thread_id = current;
      send.disabled = true;
      error.textContent = "";
      try {
        const accepted = await (await api("/api/v2/runs", { method: "POST", json: body })).json();
        state.eventsUrls.set(accepted.run_id, accepted.events_url);
        prompt.value = "";
        if (!current) {
          current = accepted.thread_id;
          title.textContent = `Thread ${current}`;
          state.skipRender = true;  // same view, now with its thread id in the URL
          location.hash = `#/threads/${current}`;
        }
        const turn = new TurnView(accepted.run_id);
        turns.append(turn.root);
        turn.stream_(accepted.events_url);
      } catch (e) {
        error.textContent = e.message;
      } finally {
        send.disabled = false;
      }
    });
  }

  async function render() {
    if (state.skipRender) { state.skipRender = false; return; }
    for (const fn of state.cleanups.splice(0)) { try { fn(); } catch (_) { /* ignore */ } }
    const parts = (location.hash.replace(/^#\/?/, "") || "").split("/");
    try {
      if (parts[0] === "runs" && parts[1]) await showRun(parts[1]);
      else if (parts[0] === "threads" && parts[1]) await showThread(parts[1]);
      else await showRuns();
    } catch (e) {
      view().append(el("div", { class: "error-box", "data-testid": "view-error" }, e.message));
    }
  }

  window.addEventListener("hashchange", render);
  render();
})();
