// The time-travel page of `eventstore serve`: plain ES2020, no framework, no build step and
// nothing fetched but the store's own API (docs/http-api.md).
//
// Every value shown comes from the store and is user data (ids, payloads, error details):
// it only ever reaches the page through textContent and attributes, never as HTML.
//
// Requests that a newer one supersedes (scrubbing, paging) carry a sequence number: a late
// answer to an older request is dropped, so the page always shows the last thing asked for.
"use strict";

(() => {
  const TOKEN_KEY = "eventstore.token";
  const TIMELINE_PAGE = 100;
  const LIST_PAGE = 50;
  const WORLD_PAGE = 200;
  const CORRELATION_LIMIT = 1000;
  const MAX_MESSAGES = 6;

  const $ = (id) => document.getElementById(id);
  const enc = encodeURIComponent;

  // ------------------------------------------------------------------ DOM building

  /** An element with attributes (`class`, `text`, `data-*`, `on*` handlers, others as is). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "text") node.textContent = String(value);
      else if (name === "class") node.className = value;
      else if (name.startsWith("on") && typeof value === "function") {
        node.addEventListener(name.slice(2), value);
      } else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function clear(node, ...children) {
    node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
  }

  /** Scroll `container` (only it, not the page) to bring `child` to its middle when it is
   * out of sight. */
  function scrollWithin(container, child) {
    const box = container.getBoundingClientRect();
    const item = child.getBoundingClientRect();
    if (item.top >= box.top + 30 && item.bottom <= box.bottom - 10) return;
    container.scrollTop += item.top - box.top - container.clientHeight / 2;
  }

  /** `fn` once calls stop coming for `ms`; `.cancel()` drops a pending call. */
  function debounce(fn, ms) {
    let timer = null;
    const call = (...args) => {
      clearTimeout(timer);
      timer = setTimeout(() => fn(...args), ms);
    };
    call.cancel = () => clearTimeout(timer);
    return call;
  }

  /** "2026-11-01 18:00:12Z" (with milliseconds when there are some), UTC. */
  function fmtTime(iso) {
    if (!iso) return "—";
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return String(iso);
    return date.toISOString().replace("T", " ").replace(".000Z", "Z");
  }

  function timeCell(iso, short = false) {
    // Short, for narrow columns: no year, no fraction ("11-01 18:00:12Z"); the whole in the
    // tooltip.
    const text = short
      ? fmtTime(iso)
          .replace(/^\d{4}-/, "")
          .replace(/\.\d+Z$/, "Z")
      : fmtTime(iso);
    return el("time", { datetime: iso || "", title: iso || "" }, text);
  }

  /** Compact JSON of a value, cut to `max` characters (the whole in the tooltip). */
  function compact(value, max = 80) {
    const text = value === undefined ? "—" : JSON.stringify(value);
    return text.length > max ? `${text.slice(0, max - 1)}…` : text;
  }

  function plural(count, noun) {
    return `${count} ${noun}${count === 1 ? "" : "s"}`;
  }

  function query(params) {
    const parts = [];
    for (const [key, value] of Object.entries(params)) {
      if (value === undefined || value === null || value === "") continue;
      parts.push(`${enc(key)}=${enc(value)}`);
    }
    return parts.length ? `?${parts.join("&")}` : "";
  }

  // ------------------------------------------------------------------ messages

  const messages = $("messages");

  function message(kind, title, detail, extra) {
    while (messages.children.length >= MAX_MESSAGES) messages.firstElementChild.remove();
    const close = el("button", {
      type: "button",
      class: "close",
      "aria-label": "dismiss",
      text: "×",
    });
    const box = el(
      "div",
      { class: `message ${kind}`, "data-testid": kind === "error" ? "error" : "notice" },
      el("strong", { text: title }),
      detail ? el("span", { class: "detail", text: detail }) : null,
      extra || null,
      close,
    );
    close.addEventListener("click", () => box.remove());
    messages.append(box);
    return box;
  }

  /** Show an error to the user: never swallowed (a cancelled request is not an error). */
  function showError(error, context) {
    if (error && error.name === "AbortError") return;
    if (error instanceof ApiError) {
      const p = error.problem;
      const head = `${context ? `${context}: ` : ""}${error.status ? `${error.status} ` : ""}${p.title || "Error"}`;
      let extra = null;
      if (Array.isArray(p.errors) && p.errors.length) {
        extra = el(
          "ul",
          { class: "problem-errors" },
          p.errors.map((e) =>
            el("li", {}, el("code", { text: e.field ?? "" }), " ", e.rule ?? compact(e)),
          ),
        );
      }
      let detail = p.detail || "";
      if (error.retryAfter) detail += ` (retry after ${error.retryAfter} s)`;
      if (error.status === 401 && !getToken()) detail += " Enter a token above.";
      message("error", head, detail, extra);
    } else {
      message("error", context || "Error", String((error && error.message) || error));
    }
  }

  window.addEventListener("error", (event) =>
    showError(event.error || event.message, "Page error"),
  );
  window.addEventListener("unhandledrejection", (event) => showError(event.reason, "Page error"));

  // ------------------------------------------------------------------ the API

  class ApiError extends Error {
    constructor(status, problem, retryAfter) {
      super(problem.detail || problem.title || `HTTP ${status}`);
      this.name = "ApiError";
      this.status = status;
      this.problem = problem;
      this.retryAfter = retryAfter;
    }
  }

  function getToken() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  /** The JSON answer of a route; an ApiError (with the problem details) on any failure. */
  async function api(path, { method = "GET", body, signal } = {}) {
    const headers = { Accept: "application/json" };
    const token = getToken();
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
        cache: "no-store",
      });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, {
        title: "Network error",
        detail: `could not reach the server (${error.message})`,
      });
    }
    const type = response.headers.get("content-type") || "";
    let data = null;
    if (type.includes("json")) {
      try {
        data = await response.json();
      } catch (error) {
        if (error.name === "AbortError") throw error;
        throw new ApiError(response.status, {
          title: "Bad response",
          detail: `invalid JSON from ${path}`,
        });
      }
    } else {
      data = await response.text();
    }
    if (!response.ok) {
      const problem =
        data && typeof data === "object"
          ? data
          : { title: response.statusText, detail: String(data || "").slice(0, 300) };
      throw new ApiError(response.status, problem, response.headers.get("retry-after"));
    }
    return data;
  }

  /** Sequenced requests: `begin()` cancels the previous one and returns its ticket; an
   * answer is used only while `isCurrent(ticket)`. */
  function channel() {
    let seq = 0;
    let controller = null;
    return {
      begin() {
        if (controller) controller.abort();
        controller = new AbortController();
        seq += 1;
        return { id: seq, signal: controller.signal };
      },
      isCurrent: (ticket) => ticket.id === seq,
    };
  }

  // ------------------------------------------------------------------ JSON with highlights

  function pointerToken(key) {
    return String(key).replace(/~/g, "~0").replace(/\//g, "~1");
  }

  /** The changes indexed by path: `exact` (add/change at a node), `removed` by parent path,
   * and `within`, every proper ancestor of a change. */
  function indexChanges(changes) {
    const exact = new Map();
    const removed = new Map();
    const within = new Set();
    for (const change of changes || []) {
      const path = change.path || "";
      if (change.op === "remove") {
        const parent = path.slice(0, path.lastIndexOf("/"));
        if (!removed.has(parent)) removed.set(parent, []);
        removed.get(parent).push(change);
      } else {
        exact.set(path, change);
      }
      // Every proper ancestor but the root (which holds every change).
      for (let cut = path.lastIndexOf("/"); cut > 0; cut = path.lastIndexOf("/", cut - 1)) {
        within.add(path.slice(0, cut));
      }
    }
    return { exact, removed, within };
  }

  function jsonValue(value) {
    const type = value === null ? "null" : typeof value;
    return el("span", { class: `jval j-${type}` }, JSON.stringify(value));
  }

  /** The value as indented JSON, one node per value (`data-path`, a JSON Pointer). Its
   * textContent is the value's JSON, so what is shown can be read back exactly. */
  function renderJson(value, changes) {
    const marks = indexChanges(changes);

    function node(item, path, key, last) {
      const keyPart =
        key === null
          ? []
          : [
              el("span", { class: "jkey" }, JSON.stringify(key)),
              el("span", { class: "jpunct" }, ": "),
            ];
      const comma = last ? null : el("span", { class: "jpunct" }, ",");
      const classes = ["jnode"];
      const change = marks.exact.get(path);
      if (change) classes.push("changed", `op-${change.op}`);
      else if (marks.within.has(path) || marks.removed.has(path)) classes.push("has-change");
      const attrs = { class: classes.join(" "), "data-path": path };
      if (change) {
        attrs.title =
          change.op === "add"
            ? `added: ${compact(change.new, 200)}`
            : `was ${compact(change.old, 200)}`;
      }
      const removals = marks.removed.get(path);
      if (removals) {
        attrs["data-removed"] = removals.map((c) => c.path).join(" ");
        attrs.title = `removed: ${removals.map((c) => `${c.path} (${compact(c.old, 60)})`).join(", ")}`;
      }
      if (item !== null && typeof item === "object") {
        const isArray = Array.isArray(item);
        const [open, close] = isArray ? ["[", "]"] : ["{", "}"];
        const entries = isArray ? item.map((v, i) => [i, v]) : Object.entries(item);
        if (!entries.length) {
          return el(
            "div",
            attrs,
            el(
              "div",
              { class: "jline" },
              keyPart,
              el("span", { class: "jpunct" }, open + close),
              comma,
            ),
          );
        }
        const children = entries.map(([k, v], i) =>
          node(v, `${path}/${pointerToken(k)}`, isArray ? null : k, i === entries.length - 1),
        );
        return el(
          "div",
          attrs,
          el("div", { class: "jline" }, keyPart, el("span", { class: "jpunct" }, open)),
          el("div", { class: "jchildren" }, children),
          el("div", { class: "jline" }, el("span", { class: "jpunct" }, close), comma),
        );
      }
      return el("div", attrs, el("div", { class: "jline" }, keyPart, jsonValue(item), comma));
    }

    return node(value, "", null, true);
  }

  // ------------------------------------------------------------------ info and token

  const info = { loaded: false, demoWorld: null, reducers: [] };

  async function loadInfo() {
    try {
      const data = await api("/v1/info");
      info.loaded = true;
      info.demoWorld = data.demo_world || null;
      info.reducers = data.reducers || [];
      info.anonymousReads = data.anonymous_reads;
      $("backend").textContent = data.backend || "";
      const badge = $("demo-world");
      badge.hidden = !info.demoWorld;
      badge.textContent = info.demoWorld ? `demo world ${info.demoWorld}` : "";
      badge.title = "the demo world: open the world view";
      clear(
        $("known-types"),
        info.reducers.map((t) => el("option", { value: t })),
      );
      if (info.demoWorld) {
        const prefix = `${info.demoWorld}-`;
        if (!$("list-prefix").value) $("list-prefix").value = prefix;
        if (!$("world-prefix").value) $("world-prefix").value = prefix;
        if (!$("list-type").value && info.reducers.includes("Player"))
          $("list-type").value = "Player";
        $("aggregate-id").placeholder = `${prefix}player-0`;
      }
      if (data.anonymous_reads === false && !getToken()) {
        message(
          "notice",
          "This server needs a token for reads",
          "Enter one in the token field above.",
        );
      }
    } catch (error) {
      showError(error, "Loading /v1/info");
    }
  }

  function renderTokenStatus() {
    $("token-status").textContent = getToken() ? "token set for this tab" : "no token";
  }

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
    $("token").value = "";
    renderTokenStatus();
    // What failed without it may work with it: read what is shown again.
    loadInfo().then(() => {
      route({ force: true });
      if (!$("aggregate-list").children.length) finder.search();
    });
  });
  $("token-clear").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    $("token").value = "";
    renderTokenStatus();
  });

  // ------------------------------------------------------------------ views and routing
  //
  // The location hash says what is shown: #view=aggregate&id=ID&v=N, #view=world&position=P,
  // #view=projections. Links (cause, effects, players in the world) push a new hash, so the
  // browser's back button returns; scrubbing only replaces it.

  const views = ["aggregate", "world", "projections"];
  let currentView = "aggregate";

  function hashParams() {
    return new URLSearchParams(location.hash.replace(/^#/, ""));
  }

  function replaceHash(params) {
    const text = `#${new URLSearchParams(params).toString()}`;
    if (location.hash !== text) history.replaceState(null, "", text);
  }

  /** Show what `params` say, as a new history entry (or again, when they are the same). */
  function navigate(params) {
    const text = `#${new URLSearchParams(params).toString()}`;
    if (location.hash === text) route({ force: true });
    else location.hash = text;
  }

  function showView(name) {
    currentView = name;
    for (const view of views) {
      $(`view-${view}`).hidden = view !== name;
      $(`tab-${view}`).setAttribute("aria-selected", String(view === name));
    }
    if (name === "projections") projections.load();
  }

  for (const view of views) {
    $(`tab-${view}`).addEventListener("click", () => {
      if (view === "aggregate" && aggregate.id) {
        navigate({ view, id: aggregate.id, v: aggregate.selected ?? aggregate.version });
      } else if (view === "world" && world.position !== null) {
        navigate({ view, position: world.position });
      } else navigate({ view });
    });
  }
  $("demo-world").addEventListener("click", () => navigate({ view: "world" }));

  function route({ force = false } = {}) {
    const params = hashParams();
    const view = views.includes(params.get("view")) ? params.get("view") : "aggregate";
    showView(view);
    if (view === "aggregate") {
      const id = params.get("id");
      const v = params.has("v") ? Number.parseInt(params.get("v"), 10) : null;
      // Without a version: its latest, read again (the finder's Open on the same id refreshes).
      if (id && (force || id !== aggregate.id || v === null))
        aggregate.open(id, Number.isFinite(v) ? v : null);
      else if (id && Number.isFinite(v) && v !== aggregate.selected) aggregate.select(v);
    } else if (view === "world") {
      const p = Number.parseInt(params.get("position"), 10);
      world.show(Number.isFinite(p) ? p : null, force);
    }
  }

  window.addEventListener("hashchange", () => route());

  // ------------------------------------------------------------------ finding aggregates

  const finder = {
    cursors: [null],
    page: 0,
    next: null,
    query: { type: "", prefix: "" },
    ticket: channel(),

    async load(page) {
      const ticket = this.ticket.begin();
      const cursor = this.cursors[page];
      const list = $("aggregate-list");
      list.dataset.status = "loading";
      try {
        const data = await api(
          `/v1/aggregates${query({
            type: this.query.type,
            prefix: this.query.prefix,
            after_type: cursor ? cursor.aggregate_type : null,
            after: cursor ? cursor.aggregate_id : null,
            limit: LIST_PAGE,
          })}`,
          { signal: ticket.signal },
        );
        if (!this.ticket.isCurrent(ticket)) return;
        this.page = page;
        this.next = data.next_after || null;
        this.cursors[page + 1] = this.next;
        const rows = (data.aggregates || []).map((ref) =>
          el(
            "li",
            {},
            el(
              "button",
              {
                type: "button",
                class: ref.aggregate_id === aggregate.id ? "selected" : "",
                "data-testid": "aggregate-item",
                "data-aggregate-id": ref.aggregate_id,
                title: `${ref.aggregate_type} ${ref.aggregate_id}`,
                onclick: () => navigate({ view: "aggregate", id: ref.aggregate_id }),
              },
              el("span", { class: "agg-id", text: ref.aggregate_id }),
              this.query.type
                ? null
                : el("span", { class: "badge small", text: ref.aggregate_type }),
            ),
          ),
        );
        clear(
          list,
          rows.length
            ? rows
            : [el("li", { class: "muted small empty", text: "No aggregate matches." })],
        );
        this.markSelected();
        $("list-prev").disabled = page === 0;
        $("list-next").disabled = !this.next;
        $("list-page").textContent = `page ${page + 1}`;
        list.dataset.status = "ready";
      } catch (error) {
        if (this.ticket.isCurrent(ticket)) list.dataset.status = "error";
        showError(error, "Listing aggregates");
      }
    },

    search() {
      this.query = { type: $("list-type").value.trim(), prefix: $("list-prefix").value.trim() };
      this.cursors = [null];
      this.load(0);
    },

    markSelected() {
      const list = $("aggregate-list");
      for (const button of list.querySelectorAll("button[data-aggregate-id]")) {
        const on = button.dataset.aggregateId === aggregate.id;
        button.classList.toggle("selected", on);
        if (on) scrollWithin(list, button.parentElement);
      }
    },
  };

  $("list-form").addEventListener("submit", (event) => {
    event.preventDefault();
    finder.search();
  });
  $("list-prev").addEventListener("click", () => finder.load(Math.max(0, finder.page - 1)));
  $("list-next").addEventListener("click", () => finder.next && finder.load(finder.page + 1));
  $("find-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = $("aggregate-id").value.trim();
    if (!id) {
      message(
        "error",
        "No aggregate id",
        "Type an aggregate id, or list aggregates by type below.",
      );
      return;
    }
    navigate({ view: "aggregate", id });
  });

  // ------------------------------------------------------------------ one aggregate

  const scrubber = $("scrubber");
  const versionInput = $("version");
  const stateBox = $("state");
  const timeline = $("timeline");

  const aggregate = {
    id: null,
    type: null,
    version: 0,
    selected: null,
    timelineFrom: null,
    timelineCount: 0,
    timelineNext: null,
    summaryTicket: channel(),
    stateTicket: channel(),
    timelineTicket: channel(),
    linksTicket: channel(),
    correlations: new Map(),

    /** Open an aggregate at a version (its latest when null). */
    async open(id, version) {
      const ticket = this.summaryTicket.begin();
      this.id = id;
      $("aggregate-id").value = id;
      finder.markSelected();
      stateBox.dataset.status = "loading";
      try {
        const summary = await api(`/v1/aggregates/${enc(id)}`, { signal: ticket.signal });
        if (!this.summaryTicket.isCurrent(ticket)) return;
        this.type = summary.aggregate_type;
        this.version = summary.version;
        this.correlations.clear();
        this.timelineFrom = null;
        this.requested = null;
        this.renderSummary(summary);
        for (const input of [scrubber, versionInput]) {
          input.max = String(summary.version);
          input.disabled = false;
        }
        $("game-time").disabled = false;
        $("at-go").disabled = false;
        $("version-max").textContent = `/ ${summary.version}`;
        $("jump-version").max = String(summary.version);
        $("scrub-note").textContent = "";
        this.select(version === null || version === undefined ? summary.version : version);
      } catch (error) {
        if (this.summaryTicket.isCurrent(ticket)) {
          stateBox.dataset.status = "error";
          this.renderEmpty(id);
        }
        showError(error, `Opening ${id}`);
      }
    },

    /** After a failed open: nothing of the aggregate shown before stays on screen. */
    renderEmpty(id) {
      this.id = null;
      this.selected = null;
      this.requested = null;
      this.timelineFrom = null;
      clear(
        $("aggregate-summary"),
        el("p", { class: "muted", text: `Nothing to show for ${id}.` }),
      );
      for (const input of [scrubber, versionInput, $("game-time"), $("at-go")])
        input.disabled = true;
      for (const box of [stateBox, $("changes"), timeline, $("links")]) clear(box);
      clear($("event"), el("p", { class: "muted", text: "No event selected." }));
      $("state-caption").textContent = "";
      $("timeline-range").textContent = "";
      $("timeline-prev").disabled = true;
      $("timeline-next").disabled = true;
      finder.markSelected();
    },

    renderSummary(summary) {
      const refresh = el("button", {
        type: "button",
        id: "refresh-aggregate",
        "data-testid": "refresh-aggregate",
        class: "ghost small-button",
        title: "read its latest version again",
        text: "↻ refresh",
        onclick: () => this.open(summary.aggregate_id, this.selected),
      });
      clear(
        $("aggregate-summary"),
        el(
          "div",
          { class: "summary-head" },
          el("h2", {
            class: "agg-title",
            id: "aggregate-title",
            "data-testid": "aggregate-title",
            text: summary.aggregate_id,
          }),
          el("span", { class: "badge type", text: summary.aggregate_type }),
          refresh,
        ),
        el(
          "dl",
          { class: "facts" },
          el("dt", { text: "version" }),
          el("dd", { "data-testid": "latest-version", text: summary.version }),
          el("dt", { text: "first event" }),
          el("dd", {}, timeCell(summary.first_timestamp)),
          el("dt", { text: "last event" }),
          el("dd", {}, timeCell(summary.last_timestamp)),
          el("dt", { text: "last position" }),
          el("dd", { text: summary.last_position ?? "—" }),
        ),
      );
    },

    /** Move to version `n`: scrubber, number, state, event, timeline page. `soon` waits for
     * the scrubber to rest before asking the server. */
    select(n, { soon = false } = {}) {
      if (this.id === null) return;
      const version = Math.min(Math.max(0, Math.trunc(Number(n)) || 0), this.version);
      this.selected = version;
      scrubber.value = String(version);
      versionInput.value = String(version);
      replaceHash({ view: "aggregate", id: this.id, v: version });
      if (version === this.requested) {
        // Shown, or on its way (a scrubber moved away and back, or its `change` after the
        // `input` that already asked): not asked again.
        this.loadStateSoon.cancel();
        stateBox.dataset.status = this.inFlight ? "loading" : "ready";
        this.markTimeline();
        return;
      }
      stateBox.dataset.status = "loading";
      if (soon) this.loadStateSoon(version);
      else {
        this.loadStateSoon.cancel(); // the scrubber's `change` follows its last `input`
        this.loadState(version);
      }
    },

    loadStateSoon: null,
    requested: null,
    inFlight: false,

    async loadState(version) {
      const ticket = this.stateTicket.begin();
      const id = this.id;
      this.requested = version;
      this.inFlight = true;
      const path =
        version === 0
          ? `/v1/aggregates/${enc(id)}/state?version=0`
          : `/v1/aggregates/${enc(id)}/state${query({ version, history: "true", history_from: version, history_limit: 1 })}`;
      stateBox.dataset.status = "loading";
      try {
        const data = await api(path, { signal: ticket.signal });
        if (!this.stateTicket.isCurrent(ticket) || id !== this.id) return;
        this.inFlight = false;
        const step = (data.history || []).find((s) => s.version === data.version) || null;
        this.renderState(data, step);
        this.renderEvent(step ? step.event : null);
        this.markTimeline();
        if (version >= 1 && !this.timelineHolds(version))
          this.loadTimeline(this.pageStart(version));
        else if (this.timelineFrom === null) this.loadTimeline(1);
      } catch (error) {
        if (this.stateTicket.isCurrent(ticket)) {
          this.inFlight = false;
          this.requested = null; // asking again may work
          stateBox.dataset.status = "error";
          stateBox.dataset.version = String(version);
          clear(stateBox, el("p", { class: "muted", text: `No state at version ${version}.` }));
          clear($("changes"));
          if (version >= 1 && !this.timelineHolds(version))
            this.loadTimeline(this.pageStart(version));
        }
        showError(error, `State of ${id} at version ${version}`);
      }
    },

    renderState(data, step) {
      const changes = step ? step.changes || [] : [];
      clear(stateBox, renderJson(data.state, changes));
      stateBox.dataset.version = String(data.version);
      stateBox.dataset.aggregateId = data.aggregate_id;
      stateBox.dataset.status = "ready";
      const caption = [`at version ${data.version}`];
      if (data.timestamp) caption.push(`game time ${fmtTime(data.timestamp)}`);
      if (data.position !== null && data.position !== undefined)
        caption.push(`position ${data.position}`);
      $("state-caption").textContent = caption.join(" · ");
      if (data.timestamp)
        $("game-time").value = new Date(data.timestamp).toISOString().slice(0, 19);

      const rows = changes.map((change) =>
        el(
          "tr",
          {
            class: `change op-${change.op}`,
            "data-testid": "change",
            "data-op": change.op,
            "data-path": change.path,
            onmouseenter: () => this.focusPath(change.path, true),
            onmouseleave: () => this.focusPath(change.path, false),
          },
          el("td", {}, el("span", { class: `op op-${change.op}`, text: change.op })),
          el("td", {}, el("code", { class: "path", text: change.path || "(whole state)" })),
          el(
            "td",
            { class: "values" },
            change.op === "add"
              ? null
              : el("code", {
                  class: "old",
                  title: JSON.stringify(change.old),
                  text: compact(change.old),
                }),
            el("span", { class: "arrow", text: " → " }),
            change.op === "remove"
              ? el("span", { class: "muted", text: "(removed)" })
              : el("code", {
                  class: "new",
                  title: JSON.stringify(change.new),
                  text: compact(change.new),
                }),
          ),
        ),
      );
      let empty = `${step ? step.event.event_type : ""} changed nothing in the state.`;
      if (!step)
        empty =
          data.version === 0
            ? "Version 0: the initial state, before the first event."
            : "No step for this version.";
      clear(
        $("changes"),
        rows.length
          ? rows
          : [el("tr", {}, el("td", { class: "muted small", colspan: 3, text: empty }))],
      );
    },

    focusPath(path, on) {
      for (const node of stateBox.querySelectorAll(".jnode")) {
        if (node.dataset.path === path) node.classList.toggle("focus", on);
      }
    },

    renderEvent(event) {
      const box = $("event");
      if (!event) {
        clear(
          box,
          el("p", {
            class: "muted",
            text: "Version 0 has no event: it is the state before the first one.",
          }),
        );
        clear($("links"));
        return;
      }
      const fact = (name, value, testid) => [
        el("dt", { text: name }),
        el("dd", { "data-testid": testid }, value),
      ];
      clear(
        box,
        el(
          "div",
          { class: "event-head" },
          el("span", { class: "event-type", "data-testid": "event-type", text: event.event_type }),
          el("span", { class: "muted small", text: `v${event.version}` }),
        ),
        el(
          "dl",
          { class: "facts" },
          fact("id", el("code", { text: event.id }), "event-id"),
          fact("game time", timeCell(event.timestamp)),
          fact("recorded", timeCell(event.recorded_at)),
          fact("position", String(event.position ?? "—")),
          fact("schema", String(event.schema_version ?? "—")),
        ),
        el("h4", { text: "payload" }),
        el(
          "div",
          { class: "json small-json", "data-testid": "payload" },
          renderJson(event.payload ?? {}, []),
        ),
        el("h4", { text: "metadata" }),
        el(
          "div",
          { class: "json small-json", "data-testid": "metadata" },
          renderJson(event.metadata ?? {}, []),
        ),
      );
      this.loadLinks(event);
    },

    async loadLinks(event) {
      const ticket = this.linksTicket.begin();
      const box = $("links");
      const metadata = event.metadata || {};
      const correlationId = metadata.correlation_id;
      const causeId = metadata.causation_id;
      box.dataset.status = "loading";
      if (!correlationId) {
        clear(
          box,
          el("p", {
            class: "muted small",
            text: "This event has no correlation_id in its metadata: its cause and effects cannot be looked up.",
          }),
          causeId
            ? el("p", { class: "small" }, "caused by event ", el("code", { text: causeId }))
            : null,
        );
        box.dataset.status = "ready";
        return;
      }
      clear(box, el("p", { class: "muted small", text: "Looking up its correlation…" }));
      try {
        let events = this.correlations.get(correlationId);
        if (!events) {
          const data = await api(
            `/v1/correlations/${enc(correlationId)}/events${query({ limit: CORRELATION_LIMIT })}`,
            {
              signal: ticket.signal,
            },
          );
          events = data.events || [];
          this.correlations.set(correlationId, events);
        }
        if (!this.linksTicket.isCurrent(ticket)) return;
        const cause = causeId ? events.find((e) => e.id === causeId) : null;
        const effects = events.filter((e) => (e.metadata || {}).causation_id === event.id);
        const link = (e, testid) =>
          el(
            "button",
            {
              type: "button",
              class: "link",
              "data-testid": testid,
              "data-aggregate-id": e.aggregate_id,
              "data-version": e.version,
              title: `${e.aggregate_id} at version ${e.version} (event ${e.id})`,
              onclick: () => navigate({ view: "aggregate", id: e.aggregate_id, v: e.version }),
            },
            el("span", { class: "event-type", text: e.event_type }),
            el("span", { class: "link-target", text: `${e.aggregate_id} v${e.version}` }),
          );
        let causePart;
        if (!causeId)
          causePart = el("span", { class: "muted", text: "none: this event starts its chain" });
        else if (cause) causePart = link(cause, "cause-link");
        else
          causePart = el(
            "span",
            {},
            "event ",
            el("code", { text: causeId }),
            el("span", { class: "muted", text: " (not among this correlation's events)" }),
          );
        clear(
          box,
          el(
            "p",
            { class: "small" },
            "correlation ",
            el("code", { "data-testid": "correlation-id", text: correlationId }),
            el("span", {
              class: "muted",
              text: ` · ${events.length}${events.length >= CORRELATION_LIMIT ? "+" : ""} events`,
            }),
          ),
          el(
            "dl",
            { class: "facts links-facts" },
            el("dt", { text: "caused by" }),
            el("dd", { "data-testid": "cause" }, causePart),
          ),
          el(
            "dl",
            { class: "facts links-facts" },
            el("dt", { text: "caused" }),
            el(
              "dd",
              { "data-testid": "effects" },
              effects.length
                ? el(
                    "ul",
                    { class: "effects" },
                    effects.map((e) => el("li", {}, link(e, "effect-link"))),
                  )
                : el("span", { class: "muted", text: "no event" }),
            ),
          ),
        );
        box.dataset.status = "ready";
      } catch (error) {
        if (this.linksTicket.isCurrent(ticket)) {
          box.dataset.status = "error";
          clear(
            box,
            el("p", {
              class: "muted small",
              text: "Could not look up its correlation (see the message above).",
            }),
          );
        }
        showError(error, `Correlation ${correlationId}`);
      }
    },

    pageStart(version) {
      return version - ((version - 1) % TIMELINE_PAGE);
    },

    timelineHolds(version) {
      return (
        this.timelineFrom !== null &&
        version >= this.timelineFrom &&
        version < this.timelineFrom + this.timelineCount
      );
    },

    /** One page of the timeline: at most TIMELINE_PAGE events from `from` on. */
    async loadTimeline(from) {
      const ticket = this.timelineTicket.begin();
      const id = this.id;
      timeline.dataset.status = "loading";
      try {
        const data = await api(
          `/v1/aggregates/${enc(id)}/events${query({ from_version: from, limit: TIMELINE_PAGE })}`,
          {
            signal: ticket.signal,
          },
        );
        if (!this.timelineTicket.isCurrent(ticket) || id !== this.id) return;
        const events = data.events || [];
        this.timelineFrom = from;
        this.timelineCount = events.length;
        this.timelineNext = data.next_version ?? null;
        const rows = events.map((e) =>
          el(
            "tr",
            {
              tabindex: "0",
              "data-testid": "timeline-row",
              "data-version": e.version,
              onclick: () => this.select(e.version),
              onkeydown: (event) => {
                if (event.key === "Enter" || event.key === " ") {
                  event.preventDefault();
                  this.select(e.version);
                }
              },
            },
            el("td", { class: "num", text: e.version }),
            el("td", {}, el("span", { class: "event-type", text: e.event_type })),
            el("td", { class: "time" }, timeCell(e.timestamp, true)),
            el("td", { class: "time muted" }, timeCell(e.recorded_at, true)),
          ),
        );
        clear(
          timeline,
          rows.length
            ? rows
            : [
                el(
                  "tr",
                  {},
                  el("td", { colspan: 4, class: "muted small", text: "No events here." }),
                ),
              ],
        );
        timeline.dataset.from = String(from);
        timeline.dataset.count = String(events.length);
        const last = events.length ? events[events.length - 1].version : from - 1;
        $("timeline-range").textContent = events.length
          ? `v${events[0].version}–v${last} of ${this.version}`
          : "no events";
        $("timeline-prev").disabled = from <= 1;
        $("timeline-next").disabled = this.timelineNext === null;
        timeline.dataset.status = "ready";
        this.markTimeline();
      } catch (error) {
        if (this.timelineTicket.isCurrent(ticket)) timeline.dataset.status = "error";
        showError(error, `Events of ${id}`);
      }
    },

    markTimeline() {
      let selectedRow = null;
      for (const row of timeline.querySelectorAll("tr[data-version]")) {
        const on = Number(row.dataset.version) === this.selected;
        row.classList.toggle("selected", on);
        if (on) {
          row.setAttribute("aria-current", "true");
          selectedRow = row;
        } else row.removeAttribute("aria-current");
      }
      if (selectedRow) scrollWithin($("timeline-scroll"), selectedRow);
    },
  };

  aggregate.loadStateSoon = debounce((version) => aggregate.loadState(version), 150);

  scrubber.addEventListener("input", () => {
    versionInput.value = scrubber.value;
    aggregate.select(scrubber.value, { soon: true });
  });
  scrubber.addEventListener("change", () => aggregate.select(scrubber.value));
  versionInput.addEventListener("change", () => aggregate.select(versionInput.value));
  versionInput.addEventListener("keydown", (event) => {
    if (event.key === "Enter") aggregate.select(versionInput.value);
  });
  $("timeline-prev").addEventListener("click", () => {
    if (aggregate.timelineFrom > 1)
      aggregate.loadTimeline(Math.max(1, aggregate.timelineFrom - TIMELINE_PAGE));
  });
  $("timeline-next").addEventListener("click", () => {
    if (aggregate.timelineNext !== null) aggregate.loadTimeline(aggregate.timelineNext);
  });
  $("jump-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const v = Number.parseInt($("jump-version").value, 10);
    if (!aggregate.id) return;
    if (!Number.isFinite(v) || v < 1 || v > aggregate.version) {
      message(
        "error",
        "No such version",
        `Versions of ${aggregate.id} go from 1 to ${aggregate.version}.`,
      );
      return;
    }
    aggregate.select(v);
  });
  $("at-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = $("game-time").value;
    if (!aggregate.id || !value) return;
    const iso = `${value.length === 16 ? `${value}:00` : value}Z`;
    try {
      const data = await api(`/v1/aggregates/${enc(aggregate.id)}/state${query({ at: iso })}`);
      const held = data.held_back
        ? ` ${data.held_back} later event(s) are stamped at or before it: the aggregate's clock went backwards there.`
        : "";
      $("scrub-note").textContent = `At ${fmtTime(iso)} it was at version ${data.version}.${held}`;
      aggregate.select(data.version);
    } catch (error) {
      showError(error, `State of ${aggregate.id} at ${iso}`);
    }
  });

  // ------------------------------------------------------------------ the world

  const world = {
    started: false,
    position: null,
    latest: null,
    ticket: channel(),

    /** Show the world at `position`; on the first visit without one, at the latest. */
    show(position, force = false) {
      if (!this.started) this.start(position);
      else if (position !== null && (force || position !== this.position)) this.load(position);
    },

    /** First visit: learn the latest position, then show the world at `wanted` or there. */
    async start(wanted) {
      this.started = true;
      if (!info.loaded) await loadInfo();
      const prefix = $("world-prefix").value.trim();
      if (!prefix) {
        clear(
          $("world"),
          el("p", {
            class: "muted panel",
            text: "This store has no demo world: enter an id prefix (e.g. world-1-) and press Show.",
          }),
        );
      }
      try {
        const probe = await api(`/v1/world${query({ type: "Player", prefix, limit: 1 })}`);
        this.setLatest(probe.position);
        if (prefix) this.load(wanted === null ? probe.position : wanted);
      } catch (error) {
        this.started = false;
        showError(error, "Reading the world");
      }
    },

    setLatest(position) {
      this.latest = position;
      $("world-scrubber").max = String(position);
      $("world-position").max = String(position);
    },

    async pages(type, prefix, position, signal) {
      const found = [];
      let cut = position;
      let after = null;
      for (;;) {
        const data = await api(
          `/v1/world${query({
            position: cut,
            type,
            prefix,
            after_type: after ? after[0] : null,
            after: after ? after[1] : null,
            limit: WORLD_PAGE,
          })}`,
          { signal },
        );
        cut = data.position; // every later page at the first page's cut
        found.push(...(data.aggregates || []));
        after = data.next_after || null;
        if (!after) return { position: cut, aggregates: found };
      }
    },

    async load(position) {
      const ticket = this.ticket.begin();
      const box = $("world");
      const prefix = $("world-prefix").value.trim();
      box.dataset.status = "loading";
      $("world-position").value = String(position);
      $("world-scrubber").value = String(position);
      try {
        const players = await this.pages("Player", prefix, position, ticket.signal);
        const cut = players.position;
        const items = await this.pages("Item", prefix, cut, ticket.signal);
        let zones = [];
        let zonesNote = "";
        const worldId = prefix.replace(/-$/, "");
        if (worldId) {
          try {
            const w = await api(`/v1/aggregates/${enc(worldId)}/state${query({ position: cut })}`, {
              signal: ticket.signal,
            });
            zones = (w.state && Array.isArray(w.state.zones) && w.state.zones) || [];
          } catch (error) {
            if (!(error instanceof ApiError && error.status === 404)) throw error;
            zonesNote = ` · no World aggregate ${worldId}: zones are those its players and items are in`;
          }
        }
        if (!this.ticket.isCurrent(ticket)) return;
        if (this.latest === null || cut > this.latest) this.setLatest(cut);
        this.position = cut;
        this.render(cut, zones, players.aggregates, items.aggregates, zonesNote);
        box.dataset.position = String(cut);
        box.dataset.status = "ready";
        $("world-position").value = String(cut);
        $("world-scrubber").value = String(cut);
        if (currentView === "world") replaceHash({ view: "world", position: cut });
      } catch (error) {
        if (this.ticket.isCurrent(ticket)) box.dataset.status = "error";
        showError(error, `The world at position ${position}`);
      }
    },

    render(cut, zones, players, items, zonesNote) {
      const byZone = new Map(zones.map((z) => [z, { players: [], items: [] }]));
      const zoneOf = (name) => {
        const key = name ?? "(nowhere)";
        if (!byZone.has(key)) byZone.set(key, { players: [], items: [] });
        return byZone.get(key);
      };
      const names = new Map();
      const natural = (a, b) => String(a).localeCompare(String(b), undefined, { numeric: true });
      for (const p of players) {
        names.set(p.aggregate_id, (p.state && p.state.name) || p.aggregate_id);
        zoneOf(p.state ? p.state.zone : null).players.push(p);
      }
      const carried = [];
      for (const item of items) {
        const s = item.state || {};
        if (s.zone === null || s.zone === undefined) carried.push(item);
        else zoneOf(s.zone).items.push(item);
      }
      const lying = items.length - carried.length;
      $("world-caption").textContent =
        `as of position ${cut}${this.latest !== null ? ` (latest ${this.latest})` : ""}${zonesNote}`;

      const playerChip = (p) => {
        const s = p.state || {};
        const inventory = Array.isArray(s.inventory) ? s.inventory.length : 0;
        return el(
          "button",
          {
            type: "button",
            class: "chip player",
            "data-testid": "zone-player",
            "data-aggregate-id": p.aggregate_id,
            title: `${p.aggregate_id} at version ${p.version}${inventory ? `, carrying ${inventory}` : ""}: open it there`,
            onclick: () => navigate({ view: "aggregate", id: p.aggregate_id, v: p.version }),
          },
          el("span", { text: names.get(p.aggregate_id) }),
          inventory ? el("span", { class: "count", text: `+${inventory}` }) : null,
        );
      };
      const itemChip = (item, holder) => {
        const s = item.state || {};
        const number = item.aggregate_id.slice(item.aggregate_id.lastIndexOf("-") + 1);
        return el(
          "button",
          {
            type: "button",
            class: `chip item kind-${String(s.kind || "unknown").replace(/[^a-z0-9_-]/gi, "")}`,
            "data-testid": "zone-item",
            "data-aggregate-id": item.aggregate_id,
            title: `${item.aggregate_id} at version ${item.version}: open it there`,
            onclick: () => navigate({ view: "aggregate", id: item.aggregate_id, v: item.version }),
          },
          el("span", { text: s.kind || "item" }),
          el("span", { class: "count", text: `#${number}` }),
          holder ? el("span", { class: "holder", text: `· ${names.get(holder) || holder}` }) : null,
        );
      };

      const cards = [];
      for (const [zone, found] of byZone) {
        found.players.sort((a, b) => natural(names.get(a.aggregate_id), names.get(b.aggregate_id)));
        found.items.sort((a, b) => natural(a.aggregate_id, b.aggregate_id));
        cards.push(
          el(
            "article",
            { class: "zone", "data-testid": "zone", "data-zone": zone },
            el(
              "header",
              {},
              el("h3", { text: zone }),
              el("span", {
                class: "muted small",
                "data-testid": "zone-counts",
                text: `${plural(found.players.length, "player")} · ${plural(found.items.length, "item")}`,
              }),
            ),
            el("div", { class: "chips players" }, found.players.map(playerChip)),
            found.items.length
              ? el(
                  "div",
                  { class: "chips items" },
                  found.items.map((i) => itemChip(i, null)),
                )
              : null,
          ),
        );
      }
      carried.sort((a, b) => natural(a.aggregate_id, b.aggregate_id));
      clear(
        $("world"),
        el(
          "p",
          { class: "world-summary", "data-testid": "world-summary" },
          el("strong", { text: `${players.length} players` }),
          ` and ${plural(items.length, "item")} (${lying} lying in a zone, ${carried.length} carried) at position ${cut}`,
          el("span", {
            class: "muted small legend-text",
            text: "  ·  hero12 +2: a player carrying 2 items; click one to open it at this moment",
          }),
        ),
        el("div", { class: "zones" }, cards),
        carried.length
          ? el(
              "article",
              { class: "zone carried", "data-testid": "carried" },
              el(
                "header",
                {},
                el("h3", { text: "carried" }),
                el("span", {
                  class: "muted small",
                  text: `${plural(carried.length, "item")} held by players`,
                }),
              ),
              el(
                "div",
                { class: "chips items" },
                carried.map((i) => itemChip(i, (i.state || {}).holder)),
              ),
            )
          : null,
      );
    },
  };

  const loadWorldSoon = debounce((p) => world.load(p), 250);
  $("world-scrubber").addEventListener("input", () => {
    $("world-position").value = $("world-scrubber").value;
    $("world").dataset.status = "loading";
    loadWorldSoon(Number($("world-scrubber").value));
  });
  $("world-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const p = Number.parseInt($("world-position").value, 10);
    if (!Number.isFinite(p) || p < 0) {
      message("error", "No such position", "A global position is an integer from 0 up.");
      return;
    }
    world.started = true;
    world.load(p);
  });

  // ------------------------------------------------------------------ projections

  const projections = {
    ticket: channel(),
    detailTicket: channel(),
    selected: null,

    async load() {
      const ticket = this.ticket.begin();
      const body = $("projections");
      body.dataset.status = "loading";
      try {
        const data = await api("/v1/projections", { signal: ticket.signal });
        if (!this.ticket.isCurrent(ticket)) return;
        const list = Array.isArray(data) ? data : data.projections || [];
        const num = (v) =>
          el("td", { class: "num", text: v === null || v === undefined ? "—" : String(v) });
        const rows = list.map((p) =>
          el(
            "tr",
            {
              "data-testid": "projection",
              "data-name": p.name,
              class: p.name === this.selected ? "selected" : "",
            },
            el(
              "td",
              {},
              el("button", {
                type: "button",
                class: "link",
                "data-testid": "projection-open",
                onclick: () => this.open(p.name),
                text: p.name,
              }),
              p.rebuilding !== null && p.rebuilding !== undefined && p.rebuilding !== false
                ? el("span", {
                    class: "badge warn small",
                    text:
                      typeof p.rebuilding === "number"
                        ? `rebuilding gen ${p.rebuilding}`
                        : "rebuilding",
                  })
                : null,
            ),
            num(p.generation),
            num(p.version),
            num(p.position),
            el("td", {
              class: `num${p.lag_events > 0 ? " warn-text" : ""}`,
              text: String(p.lag_events ?? "—"),
            }),
            num(typeof p.lag_seconds === "number" ? p.lag_seconds.toFixed(1) : p.lag_seconds),
            num(p.documents),
            num(p.aggregates),
            el("td", {
              class: `num${p.parked > 0 ? " bad-text" : ""}`,
              "data-testid": "parked-count",
              text: String(p.parked ?? "—"),
            }),
            num(p.skipped),
            num(p.dead_lettered),
            el(
              "td",
              { class: "error-cell", title: p.last_error || "" },
              p.last_error
                ? el("span", {
                    class: "bad-text",
                    text: compact(p.last_error, 60).replace(/^"|"$/g, ""),
                  })
                : el("span", { class: "muted", text: "—" }),
              p.last_error_at
                ? el("span", { class: "muted small" }, " ", timeCell(p.last_error_at))
                : null,
            ),
          ),
        );
        clear(
          body,
          rows.length
            ? rows
            : [
                el(
                  "tr",
                  {},
                  el("td", {
                    colspan: 12,
                    class: "muted small",
                    text: "No projection is registered in this store.",
                  }),
                ),
              ],
        );
        body.dataset.status = "ready";
        const parked = list.find((p) => p.parked > 0);
        if (this.selected) this.open(this.selected);
        else if (parked) this.open(parked.name);
      } catch (error) {
        if (this.ticket.isCurrent(ticket)) body.dataset.status = "error";
        showError(error, "Projections");
      }
    },

    async open(name) {
      const ticket = this.detailTicket.begin();
      this.selected = name;
      for (const row of $("projections").querySelectorAll("tr[data-name]"))
        row.classList.toggle("selected", row.dataset.name === name);
      const body = $("parked");
      body.dataset.status = "loading";
      try {
        const data = await api(`/v1/projections/${enc(name)}`, { signal: ticket.signal });
        if (!this.detailTicket.isCurrent(ticket)) return;
        $("projection-detail").hidden = false;
        $("projection-name").textContent = name;
        $("retry-note").textContent =
          data.retry_available === false
            ? "This server does not have this projection's code (eventstore serve --projections module:attr): a retry would be refused."
            : "Retrying needs a token with the admin scope.";
        const parked = data.parked_aggregates || [];
        const rows = parked.map((p) =>
          el(
            "tr",
            { "data-testid": "parked-aggregate", "data-aggregate-id": p.aggregate_id },
            el(
              "td",
              {},
              el("button", {
                type: "button",
                class: "link",
                text: p.aggregate_id,
                title: "open this aggregate at the version that failed",
                onclick: () => navigate({ view: "aggregate", id: p.aggregate_id, v: p.version }),
              }),
            ),
            el("td", { class: "num", text: p.version }),
            el("td", { class: "num", text: p.waiting_up_to ?? "—" }),
            el(
              "td",
              {},
              el("span", { class: "event-type", text: p.event_type || "" }),
              el("div", { class: "muted small" }, el("code", { text: p.event_id || "" })),
            ),
            el(
              "td",
              {},
              el("strong", { class: "bad-text", text: p.error_type || "" }),
              " ",
              p.message || "",
            ),
            el("td", { class: "time" }, timeCell(p.failed_at)),
            el(
              "td",
              {},
              el("button", {
                type: "button",
                "data-testid": "retry",
                "data-aggregate-id": p.aggregate_id,
                onclick: (e) => this.retry(name, p.aggregate_id, e.currentTarget),
                text: "Retry",
              }),
            ),
          ),
        );
        const retryAll =
          parked.length > 1
            ? el(
                "tr",
                {},
                el(
                  "td",
                  { colspan: 7 },
                  el("button", {
                    type: "button",
                    "data-testid": "retry-all",
                    onclick: (e) => this.retry(name, null, e.currentTarget),
                    text: `Retry all ${parked.length}`,
                  }),
                ),
              )
            : null;
        clear(
          body,
          rows.length
            ? [...rows, retryAll]
            : [
                el(
                  "tr",
                  {},
                  el("td", {
                    colspan: 7,
                    class: "muted small",
                    text: "No aggregate is parked: every one is up to date or on its way.",
                  }),
                ),
              ],
        );
        body.dataset.status = "ready";
      } catch (error) {
        if (this.detailTicket.isCurrent(ticket)) body.dataset.status = "error";
        showError(error, `Projection ${name}`);
      }
    },

    async retry(name, aggregateId, button) {
      button.disabled = true;
      try {
        const data = await api(`/v1/projections/${enc(name)}/retry`, {
          method: "POST",
          body: { aggregate_id: aggregateId },
        });
        const results = data.results || [];
        const lines = results.map((r) =>
          el(
            "li",
            { "data-testid": "retry-result" },
            el("code", { text: r.aggregate_id }),
            `: ${r.applied ?? 0} applied`,
            r.parked_again ? el("span", { class: "bad-text", text: " · parked again" }) : null,
            r.error ? el("span", { class: "bad-text", text: ` · ${r.error}` }) : null,
          ),
        );
        clear(
          $("retry-results"),
          el(
            "ul",
            {},
            lines.length ? lines : [el("li", { class: "muted", text: "nothing to retry" })],
          ),
        );
        const again = results.some((r) => r.parked_again || r.error);
        message(
          again ? "error" : "notice",
          `Retry of ${aggregateId || "every parked aggregate"} in ${name}`,
          again ? "still failing: see the results below" : "applied",
        );
        await this.load();
      } catch (error) {
        showError(error, `Retrying ${aggregateId || "every parked aggregate"} in ${name}`);
      } finally {
        button.disabled = false;
      }
    },
  };

  $("projections-refresh").addEventListener("click", () => projections.load());

  // ------------------------------------------------------------------ start

  async function start() {
    renderTokenStatus();
    await loadInfo();
    route();
    if (info.demoWorld) finder.search();
  }

  start();
})();
