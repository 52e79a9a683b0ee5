// shoal console: the cluster, the node's counters, and searches and trackers followed
// live. Plain JS, no build step; everything is served from this origin under a strict
// Content-Security-Policy (no inline scripts or styles: widths are set through the CSSOM).
"use strict";

(() => {
  const UF_CODES = [
    "AC", "AL", "AP", "AM", "BA", "CE", "DF", "ES", "GO", "MA", "MT", "MS", "MG", "PA",
    "PB", "PR", "PE", "PI", "RJ", "RN", "RS", "RO", "RR", "SC", "SP", "SE", "TO",
  ];
  const POLL_MS = 1000;
  const REQUEST_TIMEOUT_MS = 4000;
  const RETRY_FIRST_MS = 250;
  const RETRY_MAX_MS = 2000;
  // A stream that sends nothing (not even a keep-alive comment, every 15 s by default)
  // for this long is taken for dead and opened again.
  const STREAM_IDLE_MS = 45000;
  // Browsers allow six HTTP/1.1 connections per host: keep some for the polls.
  const MAX_STREAMS = 3;
  const STORE_KEY = "shoal-console:followed";
  const MAX_FOLLOWED = 20;
  const TERMINAL = new Set(["completed", "failed", "cancelled"]);

  const $ = (selector, root = document) => root.querySelector(selector);

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  function isTerminal(status) {
    return TERMINAL.has(status);
  }

  function isObject(value) {
    return value !== null && typeof value === "object" && !Array.isArray(value);
  }

  function finiteNumber(value) {
    return typeof value === "number" && Number.isFinite(value) ? value : null;
  }

  function formatNumber(value) {
    const number = finiteNumber(value);
    return number === null ? "n/a" : number.toLocaleString("en-US");
  }

  /** A local date as YYYY-MM-DD. */
  function isoDate(date) {
    const pad = (n) => String(n).padStart(2, "0");
    return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
  }

  /**
   * GET or send JSON with a timeout. Resolves to {ok, status, body, retryAfter}; rejects
   * only when the server could not be reached (or did not answer in time).
   */
  async function requestJson(method, url, payload) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
    try {
      const init = {
        method,
        cache: "no-store",
        credentials: "same-origin",
        headers: { Accept: "application/json" },
        signal: controller.signal,
      };
      if (payload !== undefined) {
        init.headers["Content-Type"] = "application/json";
        init.body = JSON.stringify(payload);
      }
      const response = await fetch(url, init);
      const text = await response.text();
      let body = null;
      if (text) {
        try {
          body = JSON.parse(text);
        } catch (_) {
          body = null;
        }
      }
      return {
        ok: response.ok,
        status: response.status,
        body,
        retryAfter: response.headers.get("Retry-After"),
      };
    } finally {
      clearTimeout(timer);
    }
  }

  /** The message of an API error answer, or a description of the status. */
  function errorMessage(answer) {
    if (answer && isObject(answer.body) && typeof answer.body.message === "string") {
      return answer.body.message;
    }
    return `the server answered ${answer ? answer.status : "nothing"}`;
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // ---------------------------------------------------------------------------------
  // Cluster and counters: polled every second.

  const clusterState = { lastOk: 0, failures: 0, sourcesKey: "", selfId: null, summary: "" };

  function setConnection(state, text) {
    const conn = $("#conn-state");
    if (conn.dataset.state !== state) conn.dataset.state = state;
    if (conn.textContent !== text) conn.textContent = text;
  }

  function renderCluster(cluster) {
    const tbody = $("#cluster-members");
    const members = Array.isArray(cluster.members) ? cluster.members : [];
    const rows = new Map();
    for (const row of tbody.querySelectorAll("tr[data-node-id]")) rows.set(row.dataset.nodeId, row);
    const seen = new Set();
    let leaderName = null;
    members.forEach((member, index) => {
      const nodeId = String(member.node_id);
      seen.add(nodeId);
      let row = rows.get(nodeId);
      if (!row) {
        row = buildMemberRow(nodeId);
        if (String(clusterState.selfId) === nodeId) row.classList.add("self");
      }
      // Keep the server's order.
      if (tbody.children[index] !== row) tbody.insertBefore(row, tbody.children[index] || null);
      const role = typeof member.raft_role === "string" ? member.raft_role : "none";
      const gossip = typeof member.gossip === "string" ? member.gossip : "unknown";
      const instance = member.instance_id || `node ${nodeId}`;
      if (role === "leader") leaderName = instance;
      row.dataset.role = role;
      row.dataset.gossip = gossip;
      row.dataset.instanceId = member.instance_id || "";
      row.dataset.addr = member.addr || "";
      setText($(".instance-name", row), instance);
      setText($(".node-id", row), `id ${nodeId}`);
      setText($(".addr", row), member.addr || "–");
      const roleBadge = $(".role .badge", row);
      setText(roleBadge, role);
      roleBadge.className = `badge role-${role}${role === "leader" ? " leader" : ""}`;
      const gossipBadge = $(".gossip .badge", row);
      setText(gossipBadge, gossip);
      gossipBadge.className = `badge ${["alive", "dead"].includes(gossip) ? gossip : "unknown"}`;
      setText($(".applied", row), formatNumber(member.applied_index));
      setText($(".load", row), formatNumber(member.load));
    });
    for (const [nodeId, row] of rows) {
      if (!seen.has(nodeId)) row.remove();
    }
    const alive = members.filter((member) => member.gossip === "alive").length;
    const parts = [
      `${members.length} member${members.length === 1 ? "" : "s"}`,
      `${alive} alive`,
      leaderName ? `leader ${leaderName}` : "no leader",
    ];
    if (finiteNumber(cluster.term) !== null) parts.push(`term ${cluster.term}`);
    if (finiteNumber(cluster.commit_index) !== null) parts.push(`commit ${cluster.commit_index}`);
    clusterState.summary = parts.join(" · ");
    setText($("#cluster-summary"), clusterState.summary);
    $("#cluster").dataset.members = String(members.length);
    $("#cluster").dataset.leader = leaderName ? "yes" : "no";
  }

  function buildMemberRow(nodeId) {
    const row = el("tr");
    row.dataset.nodeId = nodeId;
    const instanceCell = el("td", "instance-cell");
    instanceCell.dataset.label = "Instance";
    const instance = el("span", "instance");
    instance.append(el("span", "instance-name"));
    instanceCell.append(instance, el("span", "node-id"));
    const cell = (className, label, child) => {
      const td = el("td", className);
      td.dataset.label = label;
      if (child) td.append(child);
      return td;
    };
    row.append(
      instanceCell,
      cell("addr", "Address"),
      cell("role", "Raft role", el("span", "badge")),
      cell("gossip", "Gossip", el("span", "badge")),
      cell("applied num", "Applied"),
      cell("load num", "Load"),
    );
    return row;
  }

  function setText(node, text) {
    if (node && node.textContent !== text) node.textContent = text;
  }

  /** Marks the row of the node that answered /api/health (whose name the header shows). */
  function markSelf(nodeId) {
    for (const row of document.querySelectorAll("#cluster-members tr[data-node-id]")) {
      row.classList.toggle("self", nodeId !== null && row.dataset.nodeId === String(nodeId));
    }
  }

  function renderHealth(health) {
    setText($("#node-instance"), health.instance_id ? String(health.instance_id) : "–");
    setText($("#node-version"), health.version ? String(health.version) : "–");
    const stats = isObject(health.thread_pool_stats) ? health.thread_pool_stats : {};
    for (const name of ["workers", "active", "queued", "completed", "failed", "rejected"]) {
      setText($(`#stat-${name}`), formatNumber(stats[name]));
    }
    setText($("#stat-sessions"), formatNumber(health.sessions_live));
    renderSources(health.sources);
  }

  function renderSources(sources) {
    const names = Array.isArray(sources)
      ? sources.filter((name) => typeof name === "string" && name)
      : [];
    const list = names.length ? names : ["sample"];
    const key = list.join("\n");
    if (key === clusterState.sourcesKey) return;
    clusterState.sourcesKey = key;
    const select = $("#source");
    const chosen = select.value;
    select.replaceChildren(...list.map((name) => {
      const option = el("option", "", name);
      option.value = name;
      return option;
    }));
    select.value = list.includes(chosen) ? chosen : list.includes("sample") ? "sample" : list[0];
  }

  async function pollOnce() {
    const [cluster, health] = await Promise.allSettled([
      requestJson("GET", "/api/cluster"),
      requestJson("GET", "/api/health"),
    ]);
    let answered = false;
    if (cluster.status === "fulfilled" && cluster.value.ok && isObject(cluster.value.body)) {
      renderCluster(cluster.value.body);
      answered = true;
    }
    // /api/health answers 503 with its body when the node's Raft stopped: still show it.
    if (health.status === "fulfilled" && isObject(health.value.body)) {
      renderHealth(health.value.body);
      answered = answered || health.value.ok;
      clusterState.selfId = health.value.body.node_id ?? null;
      markSelf(clusterState.selfId);
    }
    if (answered) {
      clusterState.lastOk = Date.now();
      clusterState.failures = 0;
      setConnection("live", "live");
      $("#cluster").dataset.stale = "false";
    } else {
      clusterState.failures += 1;
      // One missed answer is not worth a word; after that, say so calmly.
      if (clusterState.failures >= 2 || clusterState.lastOk === 0) {
        setConnection("reconnecting", "reconnecting…");
        $("#cluster").dataset.stale = "true";
        if (clusterState.lastOk) {
          const ago = Math.round((Date.now() - clusterState.lastOk) / 1000);
          setText($("#cluster-summary"), `${clusterState.summary} · as of ${ago} s ago, reconnecting…`);
        } else {
          setText($("#cluster-summary"), "no answer yet, still trying…");
        }
      }
    }
  }

  async function pollLoop() {
    for (;;) {
      const started = Date.now();
      try {
        await pollOnce();
      } catch (_) {
        setConnection("reconnecting", "reconnecting…");
      }
      await sleep(Math.max(100, POLL_MS - (Date.now() - started)));
    }
  }

  // ---------------------------------------------------------------------------------
  // Saved list of followed searches and trackers (this browser's).

  function loadSaved() {
    try {
      const saved = JSON.parse(localStorage.getItem(STORE_KEY) || "[]");
      return Array.isArray(saved)
        ? saved.filter((item) => isObject(item) && typeof item.id === "string").slice(0, MAX_FOLLOWED)
        : [];
    } catch (_) {
      return [];
    }
  }

  function save() {
    const items = [...followers.values()]
      .sort((a, b) => b.addedAt - a.addedAt)
      .slice(0, MAX_FOLLOWED)
      .map((f) => ({
        id: f.id,
        kind: f.kind,
        ufs: f.order,
        request: f.request,
        status: f.status,
        added_at: f.addedAt,
        // A finished one is shown again from this, without asking the cluster (which
        // forgets it --progress-ttl after its end).
        view: isTerminal(f.status) ? f.savedView() : undefined,
      }));
    try {
      localStorage.setItem(STORE_KEY, JSON.stringify(items));
    } catch (_) {
      // Storage full or disabled: the list lives as long as the page.
    }
  }

  // ---------------------------------------------------------------------------------
  // Stream slots: a few live streams at once, the rest poll their state until one frees.

  const slots = { used: 0 };

  function tryAcquireSlot() {
    if (slots.used < MAX_STREAMS) {
      slots.used += 1;
      return true;
    }
    return false;
  }

  function releaseSlot() {
    slots.used = Math.max(0, slots.used - 1);
  }

  // ---------------------------------------------------------------------------------
  // The parser of a text/event-stream body, fed with decoded text.

  class EventStreamParser {
    constructor(onEvent) {
      this.onEvent = onEvent;
      this.buffer = "";
      this.type = "";
      this.data = [];
      this.idBuffer = null;
    }

    feed(text) {
      this.buffer += text;
      for (;;) {
        const match = /\r\n|\r|\n/.exec(this.buffer);
        if (!match) break;
        // A lone \r at the very end may be the first half of \r\n: wait for more.
        if (match[0] === "\r" && match.index === this.buffer.length - 1) break;
        const line = this.buffer.slice(0, match.index);
        this.buffer = this.buffer.slice(match.index + match[0].length);
        this.line(line);
      }
    }

    line(line) {
      if (line === "") {
        this.dispatch();
        return;
      }
      if (line.startsWith(":")) return; // a comment (keep-alive)
      const colon = line.indexOf(":");
      let field = line;
      let value = "";
      if (colon >= 0) {
        field = line.slice(0, colon);
        value = line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
      }
      if (field === "event") this.type = value;
      else if (field === "data") this.data.push(value);
      else if (field === "id") {
        if (!value.includes("\0")) this.idBuffer = value;
      }
      // "retry" is ignored: the client keeps its own backoff.
    }

    dispatch() {
      const id = this.idBuffer;
      const type = this.type || "message";
      const hasData = this.data.length > 0;
      const data = this.data.join("\n");
      this.type = "";
      this.data = [];
      if (hasData) this.onEvent({ id, type, data });
      else if (id !== null) this.onEvent({ id, type: null, data: "" });
    }
  }

  // ---------------------------------------------------------------------------------
  // A followed search or tracker: its model, its card and its event stream.

  class Follower {
    constructor(item) {
      this.id = item.id;
      // "auto": followed by an id of either kind, known from its first snapshot.
      this.kind = ["search", "tracker"].includes(item.kind) ? item.kind : "auto";
      this.addedAt = finiteNumber(item.added_at) || Date.now();
      this.request = isObject(item.request) ? item.request : null;
      this.order = Array.isArray(item.ufs) ? item.ufs.filter((uf) => typeof uf === "string") : [];
      this.status = typeof item.status === "string" ? item.status : "queued";
      this.connection = "connecting";
      this.attempt = null;
      this.lastEventId = null;
      this.parts = new Map();
      for (const uf of this.order) this.parts.set(uf, newPart());
      this.totalParts = this.order.length || null;
      this.result = null;
      this.error = null;
      this.params = null;
      this.tracker = { done: null, total: null, percent: null, events: 0, text: null };
      this.note = "";
      this.noteKind = "";
      this.cancelling = false;
      this.stopped = false;
      this.controller = null;
      this.hasSlot = false;
      this.card = this.buildCard();
      this.restored = false;
      if (isObject(item.view) && isTerminal(this.status)) {
        this.applyView(item.view);
        this.restored = true;
      }
      this.render();
    }

    get eventsUrl() {
      // The searches' event route serves trackers too (one handler for both): an id of
      // unknown kind is followed there, and its snapshot tells which it is.
      return `/api/${this.kind === "tracker" ? "trackers" : "searches"}/${encodeURIComponent(this.id)}/events`;
    }

    get viewUrl() {
      if (this.kind === "auto") return null;
      return `/api/${this.kind === "tracker" ? "trackers" : "searches"}/${encodeURIComponent(this.id)}`;
    }

    get kindName() {
      return this.kind === "auto" ? "search or tracker" : this.kind;
    }

    buildCard() {
      const card = $("#card-template").content.firstElementChild.cloneNode(true);
      card.dataset.searchId = this.id;
      card.dataset.kind = this.kind;
      card.id = `card-${this.id}`;
      setText($(".card-kind", card), this.kindName);
      setText($(".card-id", card), this.id);
      $(".cancel", card).addEventListener("click", () => {
        this.cancel().catch(() => {});
      });
      $(".forget", card).addEventListener("click", () => forget(this.id));
      $(".forget", card).setAttribute("aria-label", `Forget ${this.kindName} ${this.id}`);
      $(".cancel", card).setAttribute("aria-label", `Cancel search ${this.id}`);
      if (this.request) {
        const r = this.request;
        const keywords = Array.isArray(r.keywords) && r.keywords.length ? ` · “${r.keywords.join(", ")}”` : "";
        setText($(".card-params", card), `${r.date_from} → ${r.date_to} · ${r.source}${keywords}`);
      }
      return card;
    }

    /** The state worth keeping of a finished search or tracker. */
    savedView() {
      const parts = {};
      for (const [uf, part] of this.parts) {
        parts[uf] = {
          status: part.status,
          pages: part.pages,
          records: part.records,
          page: part.page,
          fraction: part.fraction,
        };
      }
      return {
        kind: this.kind === "auto" ? undefined : this.kind,
        status: this.status,
        attempt: this.attempt,
        total_parts: this.totalParts,
        parts,
        result: this.result,
        error: this.error,
        params: this.params,
      };
    }

    start() {
      if (isTerminal(this.status)) {
        // Known to be over: shown from what was saved, or read once.
        if (!this.restored) this.refreshView(true).catch(() => {});
        this.setConnection("closed");
        return;
      }
      this.run().catch(() => {});
    }

    stop() {
      this.stopped = true;
      if (this.controller) this.controller.abort();
    }

    /** Follows the event stream until a terminal event, 204, or stop(). */
    async run() {
      let delay = RETRY_FIRST_MS;
      let notFound = 0;
      while (!this.stopped) {
        if (!this.hasSlot) {
          if (tryAcquireSlot()) {
            this.hasSlot = true;
          } else {
            // Every stream slot is taken: read the state now and then instead.
            this.setConnection("polling", "");
            await this.refreshView(false).catch(() => {});
            if (isTerminal(this.status) || this.stopped || this.status === "not_found") break;
            await sleep(2000);
            continue;
          }
        }
        let outcome;
        try {
          outcome = await this.streamOnce();
        } catch (error) {
          outcome = { kind: "error", error };
        }
        if (this.stopped) break;
        if (outcome.kind === "done") break;
        if (outcome.kind === "not_found") {
          notFound += 1;
          if (notFound >= 3 || this.lastEventId === null) {
            this.status = this.lastEventId === null ? "not_found" : this.status;
            this.setNote(
              this.lastEventId === null
                ? `no ${this.kindName} with this id (or it expired)`
                : `this ${this.kindName} is no longer kept by the cluster`,
              "error",
            );
            this.setConnection("closed", "");
            break;
          }
        } else {
          notFound = 0;
        }
        if (outcome.gotEvents) delay = RETRY_FIRST_MS;
        this.setConnection("reconnecting", "reconnecting…");
        await sleep(delay);
        delay = Math.min(delay * 2, RETRY_MAX_MS);
      }
      if (this.hasSlot) {
        this.hasSlot = false;
        releaseSlot();
      }
      if (!this.stopped) this.setConnection("closed", "");
      this.render();
      save();
    }

    /** One request of the event stream; resolves to how it ended. */
    async streamOnce() {
      const controller = new AbortController();
      this.controller = controller;
      let idleTimer = null;
      const arm = () => {
        clearTimeout(idleTimer);
        idleTimer = setTimeout(() => controller.abort(), STREAM_IDLE_MS);
      };
      arm();
      let gotEvents = false;
      let sawTerminal = false;
      try {
        const headers = { Accept: "text/event-stream" };
        if (this.lastEventId) headers["Last-Event-ID"] = this.lastEventId;
        const response = await fetch(this.eventsUrl, {
          headers,
          cache: "no-store",
          credentials: "same-origin",
          signal: controller.signal,
        });
        if (response.status === 204) {
          // The server says this client saw the end already.
          await this.refreshView(true).catch(() => {});
          if (!isTerminal(this.status)) {
            // It never showed us the end (the id came from another attempt): read it.
            return { kind: "retry", gotEvents };
          }
          return { kind: "done", gotEvents };
        }
        if (response.status === 404) {
          await response.body?.cancel().catch(() => {});
          return { kind: "not_found", gotEvents };
        }
        if (!response.ok || !response.body) {
          const answer = { status: response.status, body: null };
          try {
            answer.body = JSON.parse(await response.text());
          } catch (_) {
            // not JSON: the load balancer's page
          }
          if (response.status < 500 && response.status !== 429 && response.status !== 408) {
            this.setNote(`the event stream was refused: ${errorMessage(answer)}`, "error");
          }
          return { kind: "retry", gotEvents };
        }
        this.setConnection("live", "");
        if (this.noteKind === "error") this.setNote("", "");
        const parser = new EventStreamParser((event) => {
          if (event.id !== null) this.lastEventId = event.id;
          if (event.type === null) return;
          gotEvents = true;
          if (this.handleEvent(event.type, event.data)) sawTerminal = true;
        });
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          arm();
          parser.feed(value);
          if (sawTerminal) {
            reader.cancel().catch(() => {});
            break;
          }
        }
        if (sawTerminal || isTerminal(this.status)) {
          this.afterEnd();
          return { kind: "done", gotEvents };
        }
        // Ended without its terminal event: the node serving it went away.
        return { kind: "retry", gotEvents };
      } catch (error) {
        if (sawTerminal || isTerminal(this.status)) {
          this.afterEnd();
          return { kind: "done", gotEvents };
        }
        return { kind: "retry", gotEvents, error };
      } finally {
        clearTimeout(idleTimer);
        if (this.controller === controller) this.controller = null;
      }
    }

    afterEnd() {
      // The terminal event carries no part details: read the final view once for them.
      this.refreshView(true).catch(() => {});
    }

    /** Applies one event; returns whether it ends the stream. */
    handleEvent(type, text) {
      let data = null;
      try {
        data = text ? JSON.parse(text) : null;
      } catch (_) {
        data = null;
      }
      switch (type) {
        case "snapshot":
          if (isObject(data)) this.applyView(data);
          break;
        case "progress":
          if (isObject(data)) this.applyProgress(data);
          break;
        case "part_completed":
          if (isObject(data)) this.applyPartCompleted(data);
          break;
        case "completed":
        case "failed":
        case "cancelled":
          this.applyTerminal(type, isObject(data) ? data : {});
          this.render();
          save();
          return true;
        default:
          // A kind this console does not know (a newer node): skip it.
          return false;
      }
      this.render();
      return false;
    }

    /** The whole state: a `snapshot` event's data or GET …/{id}. */
    applyView(view) {
      if (typeof view.kind === "string" && view.kind !== this.kind) {
        this.kind = view.kind === "tracker" ? "tracker" : "search";
        this.card.dataset.kind = this.kind;
        setText($(".card-kind", this.card), this.kind);
        $(".forget", this.card).setAttribute("aria-label", `Forget ${this.kind} ${this.id}`);
        save();
      }
      const attempt = finiteNumber(view.attempt);
      const newAttempt = attempt !== null && this.attempt !== null && attempt !== this.attempt;
      if (attempt !== null) this.attempt = attempt;
      const previous = this.status;
      if (typeof view.status === "string") this.status = view.status;
      if (previous !== this.status && isTerminal(previous) && !isTerminal(this.status)) {
        // Never move back from an end.
        this.status = previous;
      }
      if (finiteNumber(view.total_parts) !== null) this.totalParts = view.total_parts;
      if (isObject(view.parts)) {
        for (const [uf, state] of Object.entries(view.parts)) {
          if (!isObject(state)) continue;
          const part = this.part(uf);
          const status = typeof state.status === "string" ? state.status : part.status;
          if (status === "completed") {
            part.status = "completed";
            part.fraction = 1;
            if (finiteNumber(state.pages) !== null) {
              part.pages = state.pages;
              part.page = state.pages;
            }
            if (finiteNumber(state.records) !== null) part.records = state.records;
          } else {
            // A takeover runs the part again from its first page.
            if (newAttempt || part.status === "completed") {
              part.fraction = 0;
              part.page = null;
              part.pages = null;
            }
            part.status = status;
            // Only this console's saved copy carries how far a part got.
            if (finiteNumber(state.fraction) !== null) {
              part.fraction = state.fraction;
              part.page = finiteNumber(state.page);
              part.pages = finiteNumber(state.pages);
            }
          }
        }
      }
      if ("result" in view) this.result = view.result;
      if ("error" in view) this.error = view.error;
      if (this.kind === "tracker" && isObject(view.params)) {
        this.params = view.params;
        if (finiteNumber(view.params.total) !== null) this.tracker.total = view.params.total;
        if (typeof view.params.label === "string" && view.params.label) {
          setText($(".card-params", this.card), view.params.label);
        }
      }
      if (this.status === "completed") this.completeAllParts();
    }

    applyProgress(data) {
      if (this.status === "queued") this.status = "running";
      if (typeof data.uf === "string") {
        const part = this.part(data.uf);
        const page = finiteNumber(data.page);
        const pages = finiteNumber(data.pages);
        if (part.status !== "completed") {
          part.status = "running";
          if (page !== null) part.page = page;
          if (pages !== null) part.pages = pages;
          if (page !== null && pages) part.fraction = Math.min(1, Math.max(0, page / pages));
        }
        if (finiteNumber(data.records) !== null) part.records = data.records;
        return;
      }
      // A tracker's worker posts what it likes: read the usual names.
      const t = this.tracker;
      t.events += 1;
      const pick = (...names) => {
        for (const name of names) {
          const value = finiteNumber(data[name]);
          if (value !== null) return value;
        }
        return null;
      };
      const total = pick("total", "of", "count_total");
      if (total !== null && total > 0) t.total = total;
      const percent = pick("percent", "percentage", "pct");
      const done = pick("done", "current", "completed", "processed", "progress", "step", "value", "count");
      if (percent !== null) {
        t.percent = Math.min(100, Math.max(0, percent));
      } else if (done !== null) {
        t.done = done;
        t.percent = null;
      }
      const message = typeof data.message === "string" ? data.message
        : typeof data.stage === "string" ? data.stage
        : typeof data.status === "string" ? data.status : null;
      if (message !== null) t.text = message;
    }

    applyPartCompleted(data) {
      if (this.status === "queued") this.status = "running";
      if (typeof data.uf !== "string") return;
      const part = this.part(data.uf);
      part.status = "completed";
      part.fraction = 1;
      if (finiteNumber(data.pages) !== null) {
        part.pages = data.pages;
        part.page = data.pages;
      }
      if (finiteNumber(data.records) !== null) part.records = data.records;
      if (finiteNumber(data.total_parts) !== null) this.totalParts = data.total_parts;
    }

    applyTerminal(type, data) {
      this.status = typeof data.status === "string" && isTerminal(data.status) ? data.status : type;
      if (this.cancelling && this.note === "cancelling…") this.setNote("", "");
      this.cancelling = false;
      if ("result" in data) this.result = data.result;
      if ("error" in data) this.error = data.error;
      if (this.status === "completed") this.completeAllParts();
    }

    completeAllParts() {
      for (const part of this.parts.values()) {
        part.status = "completed";
        part.fraction = 1;
      }
      if (this.kind === "tracker") this.tracker.percent = 100;
    }

    part(uf) {
      let part = this.parts.get(uf);
      if (!part) {
        part = newPart();
        this.parts.set(uf, part);
        if (!this.order.includes(uf)) this.order.push(uf);
      }
      return part;
    }

    /** Reads the state with GET; `final` when the stream is over. */
    async refreshView(final) {
      if (this.viewUrl === null) return;
      let answer;
      try {
        answer = await requestJson("GET", this.viewUrl);
      } catch (_) {
        if (final && !isTerminal(this.status)) this.setNote("could not read the final state; it will show on reload", "");
        return;
      }
      if (answer.status === 404) {
        if (this.lastEventId === null && !isTerminal(this.status)) {
          this.status = "not_found";
          this.setNote(`no ${this.kindName} with this id (or it expired)`, "error");
        } else {
          this.setNote(`this ${this.kindName} is no longer kept by the cluster`, "");
        }
        this.render();
        save();
        return;
      }
      if (answer.ok && isObject(answer.body)) {
        this.applyView(answer.body);
        this.render();
        save();
      }
    }

    async cancel() {
      const button = $(".cancel", this.card);
      button.disabled = true;
      try {
        const answer = await requestJson("DELETE", `/api/searches/${encodeURIComponent(this.id)}`);
        if (answer.ok) {
          this.cancelling = true;
          this.setNote("cancelling…", "");
        } else {
          this.setNote(`could not cancel: ${errorMessage(answer)}`, "error");
        }
      } catch (_) {
        this.setNote("could not reach the server to cancel; try again", "error");
      } finally {
        button.disabled = false;
        this.render();
      }
    }

    setConnection(state) {
      this.connection = state;
      this.card.dataset.conn = state;
      this.render();
    }

    setNote(text, kind) {
      this.note = text;
      this.noteKind = kind;
      this.render();
    }

    render() {
      const card = this.card;
      const status = this.status;
      if (card.dataset.status !== status) card.dataset.status = status;
      card.dataset.kind = this.kind;
      let statusText = status === "not_found" ? "not found" : status;
      if (this.cancelling && !isTerminal(status)) statusText = "cancelling";
      setText($(".status-text", card), statusText);

      // Per-part bars, in the order the UFs were asked for when known.
      const list = $(".parts", card);
      const names = this.order.length ? this.order : [...this.parts.keys()].sort();
      const existing = new Map();
      for (const item of list.children) existing.set(item.dataset.uf, item);
      names.forEach((uf, index) => {
        const part = this.parts.get(uf) || newPart();
        let item = existing.get(uf);
        if (!item) {
          item = $("#part-template").content.firstElementChild.cloneNode(true);
          item.dataset.uf = uf;
          $(".part-bar", item).dataset.uf = uf;
          setText($(".part-name", item), uf);
        }
        if (list.children[index] !== item) list.insertBefore(item, list.children[index] || null);
        const pct = percentOf(part.fraction);
        const bar = $(".part-bar", item);
        setBar(bar, pct, part.status === "completed");
        bar.setAttribute("aria-label", `${uf} progress`);
        let text;
        if (part.status === "completed") {
          text = `${formatNumber(part.records)} rec.`;
        } else if (part.page !== null && part.pages) {
          text = `${part.page}/${part.pages} pages`;
        } else {
          text = isTerminal(status) ? status : part.status === "running" ? "running" : "waiting";
        }
        const detail = [
          `${pct} %`,
          part.pages ? `${part.page ?? 0} of ${part.pages} pages` : null,
          part.records !== null ? `${part.records} records` : null,
        ].filter(Boolean).join(", ");
        bar.setAttribute("aria-valuetext", `${uf}: ${detail}`);
        item.dataset.status = part.status;
        setText($(".part-text", item), text);
      });
      for (const [uf, item] of existing) if (!names.includes(uf)) item.remove();

      // The overall bar.
      const overall = $(".bar-overall", card);
      let overallPct = 0;
      let overallText;
      if (this.kind === "tracker" && this.parts.size === 0) {
        const t = this.tracker;
        const total = t.total || this.totalParts;
        if (status === "completed") overallPct = 100;
        else if (t.percent !== null) overallPct = Math.floor(t.percent);
        else if (t.done !== null && total) overallPct = percentOf(t.done / total);
        overallText = t.done !== null && total && status !== "completed"
          ? `${t.done}/${total}`
          : `${overallPct} %`;
        overall.dataset.indeterminate = String(t.done === null && t.percent === null && !isTerminal(status) && t.events > 0);
        overall.setAttribute("aria-valuetext", t.done !== null && total ? `${t.done} of ${total}` : `${overallPct} %`);
      } else {
        const parts = [...this.parts.values()];
        const count = Math.max(this.totalParts || 0, parts.length);
        const sum = parts.reduce((acc, part) => acc + (part.fraction || 0), 0);
        overallPct = status === "completed" ? 100 : count ? percentOf(sum / count) : 0;
        const doneParts = parts.filter((part) => part.status === "completed").length;
        const records = parts.reduce((acc, part) => acc + (part.records || 0), 0);
        const total = isObject(this.result) && finiteNumber(this.result.total_records) !== null
          ? this.result.total_records
          : records;
        overallText = `${overallPct} %`;
        overall.setAttribute("aria-valuetext", `${overallPct} %, ${doneParts} of ${count} parts, ${total} records`);
        card.dataset.records = String(total);
      }
      setBar(overall, overallPct, status === "completed");
      overall.setAttribute("aria-label", `${this.kindName} ${this.id} overall progress`);
      setText($(".overall-text", card), overallText);

      // Note, download, cancel.
      const noteEl = $(".card-note", card);
      let note = this.note;
      if (!note && status === "failed" && this.error) note = `failed: ${this.error}`;
      if (!note && this.connection === "reconnecting" && !isTerminal(status)) note = "reconnecting to the event stream…";
      if (!note && this.connection === "polling" && !isTerminal(status)) note = "too many live streams: reading the state every 2 s";
      if (!note && this.kind === "tracker" && this.tracker.text && !isTerminal(status)) note = this.tracker.text;
      if (!note && status === "completed" && isObject(this.result) && finiteNumber(this.result.total_records) !== null) {
        note = `${formatNumber(this.result.total_records)} records found`;
      }
      if (!note && status === "completed" && this.kind === "tracker" && this.result !== null && this.result !== undefined) {
        const text = JSON.stringify(this.result);
        note = `result: ${text.length > 160 ? `${text.slice(0, 160)}…` : text}`;
      }
      setText(noteEl, note);
      noteEl.dataset.kind = this.noteKind || (status === "failed" ? "error" : "");

      const link = $("a.download", card);
      const download = downloadOf(this.result);
      if (status === "completed" && download) {
        if (link.getAttribute("href") !== download.url) link.setAttribute("href", download.url);
        link.hidden = false;
        const expires = download.expiresAt ? Date.parse(download.expiresAt) : NaN;
        const expired = Number.isFinite(expires) && expires < Date.now();
        setText(link, expired ? "Download report (link expired)" : "Download report");
        link.title = download.expiresAt ? `valid until ${new Date(download.expiresAt).toLocaleString()}` : "";
        link.dataset.expired = String(expired);
      } else {
        link.hidden = true;
      }
      const cancel = $(".cancel", card);
      cancel.hidden = this.kind !== "search" || isTerminal(status) || status === "not_found";
    }
  }

  function newPart() {
    return { status: "queued", page: null, pages: null, records: null, fraction: 0 };
  }

  /** A whole percentage; 100 only when complete. */
  function percentOf(fraction) {
    const value = Math.max(0, Math.min(1, fraction || 0));
    return value >= 1 ? 100 : Math.min(99, Math.floor(value * 100));
  }

  function setBar(bar, pct, done) {
    const value = String(pct);
    if (bar.getAttribute("aria-valuenow") !== value) bar.setAttribute("aria-valuenow", value);
    const fill = $(".bar-fill", bar);
    const width = `${pct}%`;
    if (fill.style.width !== width) fill.style.width = width;
    bar.dataset.done = String(Boolean(done));
  }

  /** The report link in a search's result: result.download.url (or a tracker's url). */
  function downloadOf(result) {
    if (!isObject(result)) return null;
    const download = isObject(result.download) ? result.download : null;
    const url = download && typeof download.url === "string" ? download.url
      : typeof result.download_url === "string" ? result.download_url
      : typeof result.url === "string" ? result.url : null;
    if (!url) return null;
    // Only our own paths or http(s) links (an S3 pre-signed URL): nothing else as href.
    if (!url.startsWith("/") && !/^https?:\/\//i.test(url)) return null;
    const expiresAt = download && typeof download.expires_at === "string" ? download.expires_at : null;
    return { url, expiresAt };
  }

  // ---------------------------------------------------------------------------------
  // The list of cards.

  const followers = new Map();

  function follow(item, { front = true } = {}) {
    if (followers.has(item.id)) {
      const existing = followers.get(item.id);
      existing.card.scrollIntoView({ block: "nearest" });
      return existing;
    }
    const follower = new Follower(item);
    followers.set(item.id, follower);
    const list = $("#search-list");
    if (front) list.prepend(follower.card);
    else list.append(follower.card);
    // Over the cap: forget the oldest finished ones first, then the oldest.
    while (followers.size > MAX_FOLLOWED) {
      const byAge = [...followers.values()].sort((a, b) => a.addedAt - b.addedAt);
      const victim = byAge.find((f) => isTerminal(f.status) || f.status === "not_found") || byAge[0];
      forget(victim.id);
    }
    updateEmpty();
    save();
    follower.start();
    return follower;
  }

  function forget(id) {
    const follower = followers.get(id);
    if (!follower) return;
    const card = follower.card;
    // Keep keyboard focus in the list when the focused card goes.
    const hadFocus = card.contains(document.activeElement);
    const next = card.nextElementSibling || card.previousElementSibling;
    follower.stop();
    followers.delete(id);
    card.remove();
    if (hadFocus) {
      const target = next ? $(".forget", next) : $("#follow-id");
      if (target) target.focus();
    }
    updateEmpty();
    save();
  }

  function updateEmpty() {
    $("#searches-empty").hidden = followers.size > 0;
  }

  // ---------------------------------------------------------------------------------
  // The forms.

  function setMessage(node, text, kind) {
    node.dataset.kind = kind || "";
    setText(node, text);
  }

  function buildUfPicker() {
    const picker = $("#uf-picker");
    for (const code of UF_CODES) {
      const label = el("label", "uf-option");
      label.htmlFor = `uf-${code}`;
      const input = el("input");
      input.type = "checkbox";
      input.name = "ufs";
      input.value = code;
      input.id = `uf-${code}`;
      input.dataset.uf = code;
      label.append(input, document.createTextNode(code));
      picker.append(label);
    }
    $("#uf-all").addEventListener("click", () => {
      for (const input of picker.querySelectorAll("input")) input.checked = true;
    });
    $("#uf-none").addEventListener("click", () => {
      for (const input of picker.querySelectorAll("input")) input.checked = false;
    });
  }

  function prefillDates() {
    const today = new Date();
    const weekAgo = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 6);
    $("#date-from").value = isoDate(weekAgo);
    $("#date-to").value = isoDate(today);
  }

  /** The server's rules (it checks them again), so that a slip gets no 422. */
  function checkRequest(request) {
    const day = (text) => {
      const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(text || "");
      return match ? Date.UTC(Number(match[1]), Number(match[2]) - 1, Number(match[3])) / 86400000 : null;
    };
    if (request.ufs.length === 0) return { field: $("#uf-picker input"), text: "ufs: pick at least one UF" };
    const first = day(request.date_from);
    const last = day(request.date_to);
    if (first === null) return { field: $("#date-from"), text: "date_from: pick a date" };
    if (last === null) return { field: $("#date-to"), text: "date_to: pick a date" };
    if (last < first) return { field: $("#date-to"), text: "date_to: is before date_from" };
    if (last - first + 1 > 366) return { field: $("#date-to"), text: "date_to: the span is over 366 days" };
    if (request.keywords.length > 20) return { field: $("#keywords"), text: "keywords: at most 20 keywords" };
    if (request.keywords.some((word) => [...word].length > 100)) {
      return { field: $("#keywords"), text: "keywords: each keyword has 1 to 100 characters" };
    }
    return null;
  }

  async function submitSearch(event) {
    event.preventDefault();
    const message = $("#form-message");
    const button = $("#search-submit");
    const ufs = [...document.querySelectorAll("#uf-picker input:checked")].map((input) => input.value);
    const keywords = $("#keywords").value.split(",").map((word) => word.trim()).filter(Boolean);
    const request = {
      ufs,
      date_from: $("#date-from").value,
      date_to: $("#date-to").value,
      keywords,
      source: $("#source").value || "sample",
    };
    const problem = checkRequest(request);
    if (problem) {
      setMessage(message, problem.text, "error");
      problem.field.focus();
      return;
    }
    button.disabled = true;
    setMessage(message, "Starting…", "");
    try {
      const answer = await requestJson("POST", "/api/searches", request);
      if (answer.status === 202 && isObject(answer.body) && typeof answer.body.id === "string") {
        const id = answer.body.id;
        setMessage(message, `Search ${id.slice(0, 8)}… started.`, "ok");
        follow({
          id,
          kind: "search",
          ufs,
          request,
          status: typeof answer.body.status === "string" ? answer.body.status : "queued",
          added_at: Date.now(),
        });
      } else if (answer.status === 503) {
        const retry = answer.retryAfter ? ` Retry in ${answer.retryAfter} s.` : "";
        setMessage(message, `${errorMessage(answer)}.${retry}`.replace("..", "."), "error");
      } else {
        setMessage(message, errorMessage(answer), "error");
      }
    } catch (_) {
      setMessage(message, "Could not reach the server; check the connection and try again.", "error");
    } finally {
      button.disabled = false;
    }
  }

  async function submitFollow(event) {
    event.preventDefault();
    const input = $("#follow-id");
    const message = $("#follow-message");
    const id = input.value.trim();
    if (!/^[A-Za-z0-9_-]{1,128}$/.test(id)) {
      setMessage(message, "Enter the id of a search or tracker (letters and digits).", "error");
      input.focus();
      return;
    }
    if (followers.has(id)) {
      setMessage(message, "Already followed below.", "ok");
      follow({ id });
      return;
    }
    input.value = "";
    setMessage(message, `Following ${id.length > 12 ? `${id.slice(0, 8)}…` : id}; its card is below.`, "ok");
    follow({ id, kind: "auto", status: "connecting", added_at: Date.now() });
  }

  function clearFinished() {
    for (const follower of [...followers.values()]) {
      if (isTerminal(follower.status) || follower.status === "not_found") forget(follower.id);
    }
  }

  function init() {
    buildUfPicker();
    prefillDates();
    $("#search-form").addEventListener("submit", (event) => {
      submitSearch(event).catch(() => {});
    });
    $("#follow-form").addEventListener("submit", (event) => {
      submitFollow(event).catch(() => {});
    });
    $("#clear-finished").addEventListener("click", clearFinished);
    $("#skip-link").addEventListener("click", (event) => {
      event.preventDefault();
      const main = $("#main");
      main.focus();
      main.scrollIntoView();
    });
    // Oldest first, each prepended: newest ends on top.
    const saved = loadSaved().sort((a, b) => (a.added_at || 0) - (b.added_at || 0));
    for (const item of saved) follow(item);
    updateEmpty();
    pollLoop().catch(() => {});
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
