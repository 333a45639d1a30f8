/*
 * The taskevents dashboard: watches subjects over the Socket.IO protocol served by
 * taskevents.adapters.socketio (docs/protocol.rst).
 *
 * Every piece of server data reaches the DOM through textContent or setAttribute,
 * never through innerHTML. No build step and nothing fetched from elsewhere: the only
 * dependency is the vendored socket.io client (the global `io`).
 */
(function () {
  "use strict";

  const settings = Object.assign(
    { namespace: "/", apiPrefix: "/api/tasks", demo: false },
    window.TASKEVENTS || {},
  );
  const LOG_LIMIT = 200;
  // Unsubscribed cards get no live stream; their snapshot is refreshed this often, and
  // less often with many subjects (every answer lists them all): see refreshEvery().
  const REFRESH_MS = 5000;
  // At most this many cards are in the page; more subjects are paged (and filtered).
  // 48 fills whole rows of 2, 3, 4 or 6 columns.
  const PAGE_SIZE = 48;
  // The filter and the pager are shown from this many subjects on.
  const TOOLBAR_FROM = 13;
  // Live updates change counts and what a status filter shows: redone at most this often.
  const VIEW_DELAY_MS = 200;
  const STORAGE_KEY = "taskevents.dashboard.subscriptions";
  const ENDED = { task_completed: "completed", task_failed: "failed", task_cancelled: "cancelled" };

  // -- DOM helpers ----------------------------------------------------------------------

  function role(name, root) {
    return (root || document).querySelector('[data-role="' + name + '"]');
  }

  /** Build an element; string children become text nodes, so data is never parsed as HTML. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "className") node.className = value;
      else if (key === "hidden") node.hidden = true;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function clock(timestamp) {
    const date = timestamp ? new Date(timestamp) : new Date();
    if (Number.isNaN(date.getTime())) return String(timestamp);
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  }

  function clip(text, length) {
    const value = String(text);
    return value.length > length ? value.slice(0, length - 1) + "…" : value;
  }

  /** A short readable line for any JSON value: {"data": {"ip": "x"}} -> "data.ip: x". */
  function summarize(value, limit) {
    if (value === null || value === undefined) return "";
    if (typeof value !== "object") return clip(value, limit || 160);
    const parts = [];
    (function walk(item, path, depth) {
      if (item !== null && typeof item === "object" && !Array.isArray(item) && depth < 3) {
        for (const [key, child] of Object.entries(item)) walk(child, path ? path + "." + key : key, depth + 1);
      } else {
        parts.push((path ? path + ": " : "") + (typeof item === "string" ? item : JSON.stringify(item)));
      }
    })(value, "", 0);
    return clip(parts.join(" · "), limit || 160);
  }

  function describeError(error) {
    if (!error) return "unknown error";
    if (typeof error === "string") return error;
    const message = error.message !== undefined ? String(error.message) : summarize(error);
    return error.type ? error.type + ": " + message : message;
  }

  function percentOf(progress) {
    const value = progress && typeof progress.percent === "number" ? progress.percent : null;
    return value === null ? null : Math.max(0, Math.min(100, value));
  }

  // -- state ----------------------------------------------------------------------------

  /** name -> subject record: what the card shows, plus subscription bookkeeping. */
  const subjects = new Map();
  const stats = { duplicatesIgnored: 0, replayed: 0, resumed: 0, resynced: 0 };
  let connectionId = 0;
  let gotSubjectList = false;
  // Whether the Socket.IO connection is up, and the connection box's state.
  let online = false;
  let connectionState = "connecting";

  function loadWanted() {
    try {
      const names = JSON.parse(window.localStorage.getItem(STORAGE_KEY) || "[]");
      return new Set(Array.isArray(names) ? names.filter((name) => typeof name === "string") : []);
    } catch (_error) {
      return new Set();
    }
  }
  const initiallyWanted = loadWanted();

  function saveWanted() {
    const names = [...subjects.values()].filter((s) => s.wanted).map((s) => s.name);
    try {
      window.localStorage.setItem(STORAGE_KEY, JSON.stringify(names));
    } catch (_error) {
      // Private windows may refuse storage; subscriptions then last as long as the page.
    }
  }

  function subjectFor(name) {
    let subject = subjects.get(name);
    if (!subject) {
      subject = {
        name,
        key: name.toLowerCase(), // what the name filter matches
        seq: 0,
        status: "idle",
        running: new Map(),
        current: null,
        last: null,
        metadata: {},
        wanted: initiallyWanted.has(name),
        joined: false,
        subscribedOn: 0,
        sync: "",
        replayed: 0,
        ended: "", // why the server ended the subscription, if it did
        error: "", // the last request's error, shown on the card
        dom: null, // the card's elements, while the card is on the page shown
      };
      subjects.set(name, subject);
      orderDirty = true;
      scheduleView();
    }
    return subject;
  }

  function isTask(value) {
    return value !== null && typeof value === "object" && !Array.isArray(value);
  }

  function newestOf(running) {
    let newest = null;
    for (const task of running.values()) newest = task;
    return newest;
  }

  /** Take a status object (docs/protocol.rst): taskevents' task objects are under
   * `current`, `last` and `running_tasks`; `current_task` and `last_task` keep the
   * original system's shapes (a task type, a summary) for its clients. */
  function applySnapshot(subject, status, seq) {
    const snapshot = typeof status === "string" ? { status } : status || {};
    subject.status = snapshot.status || "idle";
    subject.running = new Map();
    const tasks = Array.isArray(snapshot.running_tasks) ? snapshot.running_tasks : [];
    for (const task of tasks.length ? tasks : isTask(snapshot.current) ? [snapshot.current] : []) {
      if (isTask(task)) subject.running.set(task.task_id || "", Object.assign({}, task));
    }
    subject.current = newestOf(subject.running);
    subject.last = isTask(snapshot.last) ? Object.assign({}, snapshot.last) : null;
    if (snapshot.metadata && typeof snapshot.metadata === "object") subject.metadata = snapshot.metadata;
    const at = typeof seq === "number" ? seq : snapshot.seq;
    if (typeof at === "number") subject.seq = at;
  }

  function applyUpdate(subject, payload) {
    const update = payload.update || {};
    const kind = update.event;
    const id = update.task_id || "";
    const running = subject.running;
    if (kind === "task_started") {
      running.set(id, { task_id: id, task_type: update.task_type, started_at: payload.timestamp, progress: null });
    } else if (kind === "task_progress") {
      if (!running.has(id)) running.set(id, { task_id: id, task_type: update.task_type, progress: null });
      const progress = Object.assign({}, update.progress || {});
      if (progress.percent === undefined && typeof update.percent === "number") progress.percent = update.percent;
      running.get(id).progress = progress;
    } else if (ENDED[kind]) {
      const task = running.get(id);
      running.delete(id);
      subject.last = {
        task_id: id,
        task_type: update.task_type || (task && task.task_type),
        outcome: ENDED[kind],
        result: update.result,
        error: update.error,
        reason: update.reason,
        ended_at: payload.timestamp,
        progress: task ? task.progress : null,
      };
    }
    subject.current = newestOf(running);
    // Not update.status: it says "idle" when a task ends even if others still run.
    subject.status = running.size ? "busy" : "idle";
    if (typeof payload.seq === "number") subject.seq = payload.seq;
  }

  // -- cards ----------------------------------------------------------------------------

  const cardsRoot = role("cards");
  let cardsBuilt = 0; // ids of their own: names such as "a b" and "a.b" would share one

  function buildCard(subject) {
    const name = subject.name;
    cardsBuilt += 1;
    const titleId = "card-title-" + cardsBuilt;
    const fill = el("div", { className: "progress-fill" });
    const dom = {
      card: null,
      meta: el("p", { className: "card-meta", "data-role": "meta" }),
      status: el("span", { className: "badge", "data-role": "status" }, "idle"),
      notice: el("p", { className: "card-notice", "data-role": "card-notice", role: "status", hidden: true }),
      taskLabel: el("span", { className: "field-label" }, "Task"),
      taskType: el("span", { className: "task-type", "data-role": "task-type" }, "none yet"),
      progressBlock: null,
      progress: el(
        "div",
        {
          className: "progress",
          role: "progressbar",
          "data-role": "progress",
          "aria-valuemin": "0",
          "aria-valuemax": "100",
          "aria-valuenow": "0",
          "aria-label": "Progress of " + name,
        },
        fill,
      ),
      fill,
      percent: el("span", { className: "percent", "data-role": "percent" }, "0%"),
      stage: el("span", { className: "stage", "data-role": "stage" }),
      message: el("p", { className: "message", "data-role": "message" }),
      outcome: el("div", { className: "outcome", "data-role": "outcome" }),
      error: el("p", { className: "card-error", "data-role": "card-error", role: "alert", hidden: true }),
      subscribe: el(
        "button",
        { type: "button", className: "button", "data-role": "subscribe" },
        "Subscribe",
      ),
      run: null,
      runFail: null,
      footer: el("p", { className: "card-foot", "data-role": "sync" }),
    };
    // Shown only while a task runs: an empty bar on an idle card reads as a stalled task.
    dom.progressBlock = el(
      "div",
      { className: "progress-block", "data-role": "progress-block", hidden: true },
      dom.progress,
      el("div", { className: "progress-line" }, dom.percent, dom.stage),
      dom.message,
    );
    const actions = el("div", { className: "card-actions" }, dom.subscribe);
    if (settings.demo && settings.apiPrefix) {
      dom.run = el("button", { type: "button", className: "button button-primary", "data-role": "run" }, "Run change_ip");
      dom.runFail = el(
        "button",
        { type: "button", className: "button button-danger", "data-role": "run-fail", "data-hint": "Run a change_ip task that fails halfway" },
        "Run & fail",
      );
      actions.append(dom.run, dom.runFail);
      dom.run.addEventListener("click", () => runTask(subject, false));
      dom.runFail.addEventListener("click", () => runTask(subject, true));
    }
    dom.subscribe.addEventListener("click", () => toggleSubscription(subject));
    dom.card = el(
      "article",
      { className: "card", "data-subject": name, "aria-labelledby": titleId },
      el(
        "header",
        { className: "card-head" },
        el("div", { className: "card-name" }, el("h3", { className: "card-title", id: titleId }, name), dom.meta),
        dom.status,
      ),
      dom.notice,
      el("div", { className: "task-line" }, dom.taskLabel, dom.taskType),
      dom.progressBlock,
      dom.outcome,
      dom.error,
      actions,
      dom.footer,
    );
    return dom;
  }

  function flash(subject) {
    if (!subject.dom) return; // not on the page shown
    const node = subject.dom.card;
    node.classList.remove("flash");
    void node.offsetWidth; // restart the animation
    node.classList.add("flash");
  }

  /** Metadata keys shown under a friendlier name. */
  const META_LABELS = { aws_current_region: "region" };

  const ENDED_BY_SERVER = {
    revoked: "You may no longer watch this subject: the server withdrew your access.",
    forgotten: "The server no longer has this subject.",
    expired: "The server dropped this subject after it had been idle for a long time.",
  };

  function endedText(reason) {
    return ENDED_BY_SERVER[reason] || "The server ended this subscription (" + reason + ").";
  }

  function runningSummary(subject) {
    const running = subject.current;
    if (!running) return subject.status;
    const known = percentOf(running.progress);
    return "busy, " + (running.task_type || "task") + (known === null ? "" : " at " + Math.round(known) + "%");
  }

  /** Show the subject's state on its card, if the card is on the page shown (the
   * others are drawn from the same state when they are shown). */
  function renderCard(subject) {
    const dom = subject.dom;
    if (!dom) return;
    const card = dom.card;
    const busy = subject.status === "busy";
    card.dataset.status = subject.status;
    card.dataset.connection = online ? "online" : "offline";
    // Offline, the last known state may be stale: say so rather than show a live "busy".
    dom.status.textContent = online ? subject.status : "offline";
    dom.status.className = "badge badge-" + (!online ? "offline" : busy ? "busy" : "idle");
    dom.status.title = online ? "" : "Last known: " + runningSummary(subject);

    const meta = Object.entries(subject.metadata || {}).map(
      ([key, value]) => (META_LABELS[key] || key) + " " + summarize(value, 40),
    );
    dom.meta.textContent = meta.join(" · ");
    dom.meta.hidden = meta.length === 0;

    let notice = "";
    let noticeKind = "";
    if (!online) {
      noticeKind = "offline";
      notice = (connectionState === "disconnected" ? "Disconnected" : "Connection lost, reconnecting") +
        ". Last known state: " + runningSummary(subject) + ".";
    } else if (subject.ended) {
      noticeKind = "ended";
      notice = endedText(subject.ended);
    }
    dom.notice.textContent = notice;
    dom.notice.hidden = !notice;
    dom.notice.dataset.kind = noticeKind;

    const running = subject.current;
    const last = subject.last;
    if (running) {
      dom.taskLabel.textContent = online ? "Running" : "Was running";
      const others = subject.running.size - 1;
      dom.taskType.textContent = (running.task_type || "task") + (others > 0 ? " (+" + others + " more)" : "");
    } else if (last) {
      dom.taskLabel.textContent = "Last run";
      dom.taskType.textContent = last.task_type || "task";
    } else {
      dom.taskLabel.textContent = "Task";
      dom.taskType.textContent = "none yet";
    }
    renderProgress(subject, online ? running : null);
    renderOutcome(subject);

    const pending = subject.wanted && !subject.joined;
    card.dataset.subscribed = subject.joined && subject.wanted ? "true" : pending ? "pending" : "false";
    dom.subscribe.textContent = subject.wanted ? (pending && online ? "Subscribing…" : "Unsubscribe") : "Subscribe";
    dom.subscribe.classList.toggle("button-on", subject.wanted);
    // Nothing reaches the server while offline; the buttons say so instead of failing.
    for (const button of [dom.subscribe, dom.run, dom.runFail]) {
      if (!button) continue;
      button.disabled = !online;
      button.title = online ? button.dataset.hint || "" : "Not connected to the server";
    }
    dom.error.textContent = subject.error;
    dom.error.hidden = !subject.error;
    card.dataset.sync = subject.sync;
    card.dataset.seq = String(subject.seq);
    dom.footer.textContent = footerText(subject, pending);
    dom.footer.title = "seq " + subject.seq + (subject.sync ? " · last sync: " + subject.sync : "") +
      (subject.stream ? " · stream " + subject.stream : "");
  }

  function footerText(subject, pending) {
    if (!online) return subject.wanted ? "Live updates resume when the connection is back" : "Not connected";
    if (subject.ended) return "Not subscribed";
    if (!subject.wanted) return "Not subscribed · refreshed every " + refreshEvery() / 1000 + " s";
    if (pending) return "Subscribing…";
    if (subject.sync === "resumed") return "Live · caught up after reconnecting";
    if (subject.sync === "resync") return "Live · reloaded (the missed updates were no longer available)";
    return "Live";
  }

  /** The progress block: shown only for a running task, hidden once it ends (its
   * message would be stale; the outcome says how it ended). */
  function renderProgress(subject, running) {
    const dom = subject.dom;
    dom.progressBlock.hidden = !running;
    if (!running) {
      dom.progress.className = "progress";
      dom.fill.style.width = "0%";
      dom.percent.textContent = "";
      dom.stage.textContent = "";
      dom.message.textContent = "";
      return;
    }
    const progress = running.progress;
    const known = percentOf(progress);
    const percent = known === null ? 0 : known;
    const shown = Math.round(percent);
    dom.progress.className = "progress progress-" + (known === null ? "indeterminate" : "running");
    dom.fill.style.width = percent + "%";
    if (known === null) {
      dom.progress.removeAttribute("aria-valuenow");
      dom.progress.setAttribute("aria-valuetext", "in progress");
      dom.percent.textContent = "…";
    } else {
      dom.progress.setAttribute("aria-valuenow", String(shown));
      dom.progress.setAttribute("aria-valuetext", shown + "%" + (progress && progress.stage ? ", " + progress.stage : ""));
      dom.percent.textContent = shown + "%";
    }
    dom.stage.textContent = progress && progress.stage ? String(progress.stage) : "";
    dom.message.textContent = progress && progress.message ? String(progress.message) : "";
  }

  function renderOutcome(subject) {
    const box = subject.dom.outcome;
    const last = subject.last;
    box.replaceChildren();
    subject.dom.card.dataset.outcome = last ? last.outcome || "" : "";
    if (!last) {
      box.className = "outcome outcome-none";
      box.append(el("span", { className: "outcome-label" }, "No finished task yet"));
      return;
    }
    const outcome = last.outcome || "ended";
    box.className = "outcome outcome-" + outcome;
    let detail = "";
    if (outcome === "completed") detail = last.result === null || last.result === undefined ? "" : summarize(last.result);
    else if (outcome === "failed") detail = describeError(last.error);
    else if (outcome === "cancelled") detail = last.reason ? String(last.reason) : "no reason given";
    const icon = { completed: "✓", failed: "✕", cancelled: "■" }[outcome] || "•";
    box.append(
      el("span", { className: "outcome-icon", "aria-hidden": "true" }, icon),
      el("span", { className: "outcome-label", "data-role": "outcome-label" }, outcome),
      el("span", { className: "outcome-detail", "data-role": "outcome-detail" }, detail),
      el("time", { className: "outcome-time", datetime: last.ended_at || "" }, last.ended_at ? clock(last.ended_at) : ""),
    );
  }

  function showCardError(subject, message) {
    subject.error = message || "";
    renderCard(subject);
  }

  // -- the page shown: filter and pager -------------------------------------------------
  //
  // Every subject is in `subjects`, the model, which every message updates; only the
  // cards of the page shown are in the document (at most PAGE_SIZE), so ten thousand
  // subjects cost ten thousand small objects, not ten thousand cards. A card is built
  // when its subject comes onto the page shown, from the model, and let go when it
  // leaves it.

  const toolbar = role("toolbar");
  const filterInput = role("filter");
  const statusFilter = role("status-filter");
  const pager = role("pager");
  const pagePrev = role("page-prev");
  const pageNext = role("page-next");
  const pageNumber = role("page-number");
  const pageCount = role("page-count");
  const pagerInfo = role("pager-info");
  const noMatch = role("no-match");
  const subscribeAllButton = role("subscribe-all");
  const numbers = new Intl.NumberFormat("en");
  const collator = new Intl.Collator("en", { numeric: true });
  const STATUS_LABELS = { all: "All", busy: "Busy", failed: "Last run failed", subscribed: "Subscribed" };

  const view = { text: "", status: "all", page: 0, pages: 1, matching: 0 };
  let order = []; // every subject's name, sorted (aws2 before aws10)
  let orderDirty = false;
  let onPage = []; // the names whose cards are in the document, in order
  let viewTimer = 0;

  function compareNames(a, b) {
    return collator.compare(a, b) || (a < b ? -1 : a > b ? 1 : 0);
  }

  function matchesStatus(subject) {
    switch (view.status) {
      case "busy":
        return subject.status === "busy";
      case "failed":
        return Boolean(subject.last && subject.last.outcome === "failed");
      case "subscribed":
        return subject.wanted;
      default:
        return true;
    }
  }

  /** Redo the page shown soon: for what live updates change (counts, and which
   * subjects a status filter shows), at most every VIEW_DELAY_MS. */
  function scheduleView() {
    if (!viewTimer) viewTimer = window.setTimeout(refreshView, VIEW_DELAY_MS);
  }

  /** Work out which subjects match the filter and which of them are on the page
   * shown, and put exactly their cards in the document, in order. Cards that stay are
   * not moved, so a focused button keeps its focus. */
  function refreshView() {
    if (viewTimer) window.clearTimeout(viewTimer);
    viewTimer = 0;
    if (orderDirty) {
      order = [...subjects.keys()].sort(compareNames);
      orderDirty = false;
    }
    const needle = view.text.trim().toLowerCase();
    const counts = { all: subjects.size, busy: 0, failed: 0, subscribed: 0 };
    const matching = [];
    for (const name of order) {
      const subject = subjects.get(name);
      if (subject.status === "busy") counts.busy += 1;
      if (subject.last && subject.last.outcome === "failed") counts.failed += 1;
      if (subject.wanted) counts.subscribed += 1;
      if ((!needle || subject.key.includes(needle)) && matchesStatus(subject)) matching.push(name);
    }
    view.matching = matching.length;
    view.pages = Math.max(1, Math.ceil(matching.length / PAGE_SIZE));
    view.page = Math.max(0, Math.min(view.page, view.pages - 1));
    const first = view.page * PAGE_SIZE;
    const names = matching.slice(first, first + PAGE_SIZE);

    const keep = new Set(names);
    for (const name of onPage) {
      const subject = subjects.get(name);
      if (!keep.has(name) && subject && subject.dom) {
        subject.dom.card.remove();
        subject.dom = null;
      }
    }
    names.forEach((name, index) => {
      const subject = subjects.get(name);
      if (!subject.dom) {
        subject.dom = buildCard(subject);
        renderCard(subject);
      }
      const here = cardsRoot.children[index] || null;
      if (here !== subject.dom.card) cardsRoot.insertBefore(subject.dom.card, here);
    });
    onPage = names;

    if (subjects.size > 0) role("subjects-empty").hidden = true;
    const filtered = Boolean(needle) || view.status !== "all";
    toolbar.hidden = subjects.size < TOOLBAR_FROM && !filtered;
    noMatch.hidden = !(filtered && matching.length === 0 && subjects.size > 0);
    for (const option of statusFilter.options) {
      const count = counts[option.value];
      option.textContent = STATUS_LABELS[option.value] + (count === undefined ? "" : " (" + numbers.format(count) + ")");
    }
    renderPager(first, names.length, filtered);
    const wholeList = !filtered && names.length === subjects.size;
    subscribeAllButton.textContent = wholeList ? "Subscribe to all" : "Subscribe to this page";
    subscribeAllButton.title = wholeList ? "" : "Subscribe to the " + numbers.format(names.length) + " subjects shown";
  }

  function renderPager(first, count, filtered) {
    const total = subjects.size;
    const matching = view.matching;
    let text;
    if (!filtered) {
      text = view.pages > 1
        ? "Showing " + numbers.format(first + 1) + "–" + numbers.format(first + count) + " of " + numbers.format(total) + " subjects"
        : "Showing all " + numbers.format(total) + " subjects";
    } else if (matching === 0) {
      text = "No matching subject (" + numbers.format(total) + " in all)";
    } else {
      const noun = matching === 1 ? " matching subject" : " matching subjects";
      text = (view.pages > 1
        ? "Showing " + numbers.format(first + 1) + "–" + numbers.format(first + count) + " of " + numbers.format(matching)
        : "Showing " + numbers.format(matching)) + noun + " (" + numbers.format(total) + " in all)";
    }
    if (pagerInfo.textContent !== text) pagerInfo.textContent = text;
    pager.hidden = view.pages <= 1;
    pageCount.textContent = numbers.format(view.pages);
    pageNumber.max = String(view.pages);
    if (document.activeElement !== pageNumber) pageNumber.value = String(view.page + 1);
    const focused = document.activeElement;
    pagePrev.disabled = view.page === 0;
    pageNext.disabled = view.page >= view.pages - 1;
    // A button that is disabled under the keyboard's focus would drop it to the page.
    if (focused === pageNext && pageNext.disabled && !pagePrev.disabled) pagePrev.focus();
    if (focused === pagePrev && pagePrev.disabled && !pageNext.disabled) pageNext.focus();
  }

  function goToPage(page) {
    view.page = page;
    refreshView();
  }

  filterInput.addEventListener("input", () => {
    view.text = filterInput.value;
    view.page = 0;
    refreshView();
  });
  statusFilter.addEventListener("change", () => {
    view.status = statusFilter.value;
    view.page = 0;
    refreshView();
  });
  pagePrev.addEventListener("click", () => goToPage(view.page - 1));
  pageNext.addEventListener("click", () => goToPage(view.page + 1));
  pageNumber.addEventListener("change", () => {
    const wanted = Number.parseInt(pageNumber.value, 10);
    if (Number.isFinite(wanted)) goToPage(wanted - 1);
    pageNumber.value = String(view.page + 1);
  });
  // "/" moves to the name filter, as on many sites, when it is shown and nothing is typed in.
  document.addEventListener("keydown", (event) => {
    if (event.key !== "/" || event.ctrlKey || event.metaKey || event.altKey || toolbar.hidden) return;
    const target = event.target;
    if (target instanceof HTMLElement && (target.isContentEditable || /^(INPUT|SELECT|TEXTAREA)$/.test(target.tagName))) return;
    event.preventDefault();
    filterInput.focus();
    filterInput.select();
  });
  filterInput.setAttribute("aria-keyshortcuts", "/");

  // -- log and alerts -------------------------------------------------------------------

  const logRoot = role("log");
  role("log-limit").textContent = String(LOG_LIMIT);

  function log(kind, subjectName, text, extra) {
    const entry = el(
      "li",
      Object.assign({ className: "log-entry log-" + kind.replace(/[^a-z_]/g, ""), "data-event": kind }, extra || {}),
      el("time", { className: "log-time" }, clock()),
      subjectName ? el("span", { className: "log-subject" }, subjectName) : null,
      el("span", { className: "log-event" }, kind),
      text ? el("span", { className: "log-text" }, text) : null,
    );
    if (subjectName) entry.dataset.logSubject = subjectName;
    logRoot.prepend(entry);
    while (logRoot.childElementCount > LOG_LIMIT) logRoot.lastElementChild.remove();
  }

  const alertsRoot = role("errors");

  function showAlert(text) {
    const close = el("button", { type: "button", className: "alert-close", "aria-label": "Dismiss" }, "×");
    const item = el("div", { className: "alert", "data-role": "error-item" }, el("span", { className: "alert-text" }, text), close);
    close.addEventListener("click", () => item.remove());
    alertsRoot.prepend(item);
    while (alertsRoot.childElementCount > 3) alertsRoot.lastElementChild.remove();
  }

  role("log-clear").addEventListener("click", () => logRoot.replaceChildren());

  // -- connection -----------------------------------------------------------------------

  const connectionBox = role("connection");
  const connectionText = role("connection-text");
  const connectionToggle = role("connection-toggle");
  const subscribeAll = role("subscribe-all");

  function setConnection(state, text) {
    const changed = state !== connectionState;
    connectionState = state;
    online = state === "connected";
    connectionBox.dataset.state = state;
    connectionText.textContent = text;
    connectionToggle.textContent = state === "disconnected" ? "Connect" : "Disconnect";
    subscribeAll.disabled = !online;
    if (changed) for (const name of onPage) renderCard(subjects.get(name));
  }

  if (typeof window.io !== "function") {
    setConnection("disconnected", "No Socket.IO client");
    showAlert("The Socket.IO client (vendor/socket.io.min.js) did not load; run ./dev setup.");
    return;
  }

  const socket = window.io(settings.namespace || "/", {
    autoConnect: false,
    // Under a prefix (an ASGI root_path), Socket.IO is served under it too.
    path: settings.socketioPath || "/socket.io",
  });

  function subscribe(subject, resume) {
    subject.joined = false;
    subject.replayed = 0;
    if (!socket.connected) return; // done on connect; emits are never buffered
    const payload = { config_name: subject.name };
    if (resume && subject.seq > 0) {
      payload.since = subject.seq;
      // The seq means something only in the stream it came from; a restarted server
      // has another one and answers with a fresh snapshot (resync).
      if (subject.stream) payload.stream = subject.stream;
    }
    subject.subscribedOn = connectionId;
    socket.emit("subscribe_task", payload);
  }

  function toggleSubscription(subject) {
    subject.wanted = !subject.wanted;
    subject.ended = "";
    if (subject.wanted) {
      subscribe(subject, false);
    } else {
      subject.joined = false;
      if (socket.connected) socket.emit("unsubscribe_task", { config_name: subject.name });
    }
    saveWanted();
    renderCard(subject);
    scheduleView(); // the counts, and what "Subscribed" shows
  }

  connectionToggle.addEventListener("click", () => {
    if (socket.connected || socket.active) {
      socket.disconnect();
    } else {
      setConnection("connecting", "Connecting…");
      socket.connect();
    }
  });

  // All the subjects when they are all shown; else those of the page shown (a server
  // lets one client watch only so many: 100 by default).
  subscribeAll.addEventListener("click", () => {
    for (const name of onPage) {
      const subject = subjects.get(name);
      if (!subject.wanted) toggleSubscription(subject);
    }
  });

  // The periodic get_all_tasks for unsubscribed cards: one at a time (the next is asked
  // once the answer to the last has come), and less often with many subjects.
  let refreshAskedAt = 0;
  let refreshPending = false;

  function refreshEvery() {
    return Math.min(60000, Math.max(1, Math.ceil(subjects.size / 1000)) * REFRESH_MS);
  }

  function askAllTasks() {
    refreshAskedAt = Date.now();
    refreshPending = true;
    socket.emit("get_all_tasks");
  }

  socket.on("connect", () => {
    connectionId += 1;
    setConnection("connected", "Connected · client " + socket.id);
    log("connection", "", "connected as " + socket.id);
    askAllTasks();
    for (const subject of subjects.values()) {
      if (subject.wanted) subscribe(subject, true);
    }
  });

  socket.on("connection_status", (payload) => {
    if (payload && payload.client_id) {
      setConnection("connected", "Connected · client " + payload.client_id);
    }
  });

  socket.on("disconnect", (reason) => {
    refreshPending = false;
    for (const subject of subjects.values()) subject.joined = false;
    if (reason === "io client disconnect") {
      setConnection("disconnected", "Disconnected");
    } else if (reason === "io server disconnect") {
      setConnection("disconnected", "Disconnected by the server");
    } else {
      setConnection("reconnecting", "Connection lost · reconnecting…");
    }
    log("connection", "", "disconnected (" + reason + ")");
  });

  socket.io.on("reconnect_attempt", (attempt) => {
    setConnection("reconnecting", "Reconnecting · attempt " + attempt + "…");
  });

  socket.io.on("reconnect_failed", () => {
    setConnection("disconnected", "Could not reconnect");
  });

  socket.on("connect_error", (error) => {
    const reason = error && error.message ? error.message : "connection failed";
    if (socket.active) {
      setConnection("reconnecting", "Cannot reach the server · retrying…");
    } else {
      setConnection("disconnected", "Refused: " + reason);
      showAlert("The server refused the connection: " + reason);
    }
  });

  // -- protocol messages ----------------------------------------------------------------

  // all_tasks is {config_name: status object}, as the original sent it.
  socket.on("all_tasks", (payload) => {
    refreshPending = false;
    const tasks = payload && typeof payload === "object" && !Array.isArray(payload) ? payload : {};
    for (const name of Object.keys(tasks)) {
      if (!isTask(tasks[name])) continue;
      const subject = subjectFor(name);
      // Subscribed cards follow their own stream; taking this snapshot would skip events.
      if (!subject.wanted) applySnapshot(subject, tasks[name]);
      if (subject.wanted && subject.subscribedOn !== connectionId) subscribe(subject, true);
      renderCard(subject);
    }
    if (!gotSubjectList) {
      gotSubjectList = true;
      const empty = role("subjects-empty");
      empty.textContent = "The server has no subjects.";
      empty.hidden = subjects.size > 0;
    }
    refreshView();
  });

  socket.on("task_status", (payload) => {
    if (!payload || typeof payload.config_name !== "string") return;
    const subject = subjectFor(payload.config_name);
    if (typeof payload.stream === "string") subject.stream = payload.stream;
    let note;
    if (payload.resumed) {
      stats.resumed += 1;
      if (typeof payload.seq !== "number" || payload.seq >= subject.seq) applySnapshot(subject, payload.status, payload.seq);
      subject.sync = "resumed";
      note = "resumed at seq " + subject.seq + ", " + subject.replayed + " missed event(s) replayed";
    } else if (payload.resync) {
      // The server no longer has what we missed (or restarted): its snapshot wins.
      stats.resynced += 1;
      applySnapshot(subject, payload.status, payload.seq);
      subject.sync = "resync";
      note = "fresh snapshot at seq " + subject.seq + " (missed events no longer available)";
    } else {
      applySnapshot(subject, payload.status, payload.seq);
      subject.sync = "snapshot";
      note = "snapshot at seq " + subject.seq + ": " + subject.status;
    }
    if (subject.wanted) {
      subject.joined = true;
      subject.ended = "";
    }
    log("task_status", subject.name, note, { "data-sync": subject.sync });
    renderCard(subject);
    flash(subject);
    scheduleView();
  });

  socket.on("task_status_update", (payload) => {
    if (!payload || typeof payload.config_name !== "string") return;
    const subject = subjectFor(payload.config_name);
    if (typeof payload.seq === "number" && payload.seq <= subject.seq) {
      stats.duplicatesIgnored += 1;
      return;
    }
    applyUpdate(subject, payload);
    const update = payload.update || {};
    if (payload.replayed) {
      subject.replayed += 1;
      stats.replayed += 1;
    }
    log(String(update.event || "update"), subject.name, describeUpdate(update), payload.replayed ? { "data-replayed": "true" } : null);
    renderCard(subject);
    if (ENDED[update.event] || update.event === "task_started") {
      flash(subject);
      scheduleView(); // the counts, and what a status filter shows
    }
  });

  // A text from a task, isolated (FSI ... PDI): a right-to-left override in it cannot
  // turn the rest of the line around.
  function iso(text) {
    return "\u2068" + String(text) + "\u2069";
  }

  function describeUpdate(update) {
    const type = iso(update.task_type || "task");
    switch (update.event) {
      case "task_started":
        return type + " started";
      case "task_progress": {
        const progress = update.progress || {};
        const percent = percentOf(progress);
        const parts = [];
        if (percent !== null) parts.push(Math.round(percent) + "%");
        if (progress.stage) parts.push(iso(progress.stage));
        if (progress.message) parts.push(iso(progress.message));
        return parts.join(" · ");
      }
      case "task_completed":
        return type + " completed" + (update.result ? ": " + iso(summarize(update.result, 100)) : "");
      case "task_failed":
        return type + " failed: " + iso(describeError(update.error));
      case "task_cancelled":
        return type + " cancelled" + (update.reason ? ": " + iso(update.reason) : "");
      default:
        return summarize(update, 120);
    }
  }

  socket.on("unsubscribed", (payload) => {
    if (!payload || typeof payload.config_name !== "string") return;
    const subject = subjectFor(payload.config_name);
    const reason = typeof payload.reason === "string" && payload.reason ? payload.reason : "";
    if (reason) {
      // The server ended it by itself: subscribing again would likely be refused
      // (revoked), or be about a new subject (forgotten, expired). Say so, and leave
      // the choice to the user.
      subject.wanted = false;
      subject.joined = false;
      subject.ended = reason;
      if (reason !== "revoked") {
        subject.seq = 0; // a subject that comes back is numbered from 1 again
        subject.stream = undefined;
      }
      saveWanted();
      log("unsubscribed", subject.name, "ended by the server: " + reason);
    } else {
      // A late confirmation after a quick re-subscribe is not news.
      if (!subject.wanted) subject.joined = false;
      log("unsubscribed", subject.name, "no more live updates");
    }
    renderCard(subject);
    scheduleView();
  });

  socket.on("error", (payload) => {
    const problem = payload && typeof payload === "object" ? payload : { message: String(payload) };
    const message = problem.message ? String(problem.message) : "the server reported an error";
    const about = [problem.event ? "event " + problem.event : "", problem.field ? "field " + problem.field : ""]
      .filter(Boolean)
      .join(", ");
    showAlert("Server error: " + message + (about ? " (" + about + ")" : ""));
    if (problem.event === "get_all_tasks") refreshPending = false; // rate-limited: ask later
    log("error", typeof problem.config_name === "string" ? problem.config_name : "", message);
    if (problem.event === "subscribe_task" && typeof problem.config_name === "string" && subjects.has(problem.config_name)) {
      const subject = subjects.get(problem.config_name);
      if (typeof problem.retry_after === "number") {
        // Rate-limited, not refused: ask again when the server says we may.
        subject.joined = false;
        setTimeout(() => {
          if (subject.wanted && !subject.joined) subscribe(subject, true);
        }, Math.max(100, problem.retry_after * 1000));
        renderCard(subject);
        return;
      }
      subject.wanted = false;
      subject.joined = false;
      saveWanted();
      showCardError(subject, message);
      renderCard(subject);
    }
  });

  // -- demo: start tasks over HTTP ------------------------------------------------------

  async function runTask(subject, fail) {
    showCardError(subject, "");
    if (!subject.wanted) toggleSubscription(subject); // you want to watch what you start
    const body = fail ? { task_type: "change_ip", fail: true } : { task_type: "change_ip" };
    const url = settings.apiPrefix + "/" + encodeURIComponent(subject.name);
    let response;
    try {
      response = await fetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(body),
      });
    } catch (error) {
      const message = "Could not reach the server: " + (error && error.message ? error.message : error);
      showCardError(subject, message);
      log("http", subject.name, message);
      return;
    }
    let data = null;
    try {
      data = await response.json();
    } catch (_error) {
      data = null;
    }
    if (response.ok) {
      const taskId = data && data.task_id ? " (task " + String(data.task_id).slice(0, 8) + ")" : "";
      log("http", subject.name, "POST " + response.status + ": " + (fail ? "failing task" : "change_ip") + " accepted" + taskId);
      return;
    }
    const detail = data && data.error && data.error.message ? String(data.error.message) : response.statusText;
    const message = (response.status === 409 ? "Busy (409): " : "HTTP " + response.status + ": ") + detail;
    showCardError(subject, message);
    log("http", subject.name, message, { "data-status": String(response.status) });
  }

  // -- start ----------------------------------------------------------------------------

  window.setInterval(() => {
    if (!socket.connected || document.hidden) return; // a hidden tab catches up when shown
    const since = Date.now() - refreshAskedAt;
    // An answer that never came (lost with a connection) does not stop the refresh.
    if (refreshPending && since < Math.max(30000, 2 * refreshEvery())) return;
    if (since < refreshEvery()) return;
    for (const subject of subjects.values()) {
      if (!subject.wanted) {
        askAllTasks();
        return;
      }
    }
  }, 1000);

  // For tests and for the curious, from the browser console.
  window.taskeventsDashboard = { socket, subjects, settings, stats, pageSize: PAGE_SIZE };

  setConnection("connecting", "Connecting…");
  socket.connect();
})();
