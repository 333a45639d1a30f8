// Drives the taskevents demo server with the official socket.io-client, checking the
// wire protocol (the original TaskMaster shapes plus the superset's seq) field by field.
//
//   node tests/js/protocol_client.mjs <server-url> <mode>
//
// Modes:
//   websocket         transports ["websocket"] only
//   polling-upgrade   transports ["polling", "websocket"]; the transport must upgrade
//   foreign-origin-polling     polling with Origin: http://evil.example: must be refused
//   foreign-origin-websocket   websocket with Origin: http://evil.example: must be refused
//
// Prints exactly one JSON line: {"ok": true, ...} and exits 0, or
// {"ok": false, "error": "..."} and exits 1. Never runs longer than OVERALL_TIMEOUT_MS.

import { io } from "socket.io-client";

const OVERALL_TIMEOUT_MS = 20_000;
const STEP_TIMEOUT_MS = 8_000;
const SUBJECT = "aws01";
const CONFIGS = ["aws01", "aws02", "aws03"];
const FOREIGN_ORIGIN = "http://evil.example";
const MODES = ["websocket", "polling-upgrade", "foreign-origin-polling", "foreign-origin-websocket"];
// ISO 8601 date-time, with optional fraction and optional zone (the seed has no zone).
const ISO_8601 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?$/;

class CheckError extends Error {}

let finished = false;
let activeSocket = null;

function finish(result) {
  if (finished) return;
  finished = true;
  if (activeSocket) {
    activeSocket.offAny();
    activeSocket.disconnect();
  }
  process.stdout.write(JSON.stringify(result) + "\n", () => {
    process.exit(result.ok ? 0 : 1);
  });
}

function fail(message) {
  throw new CheckError(message);
}

function check(condition, message) {
  if (!condition) fail(message);
}

function show(value) {
  const text = JSON.stringify(value);
  return text === undefined ? String(value) : text.length > 400 ? text.slice(0, 400) + "..." : text;
}

function isObject(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function checkTimestamp(where, value) {
  check(typeof value === "string", `${where}: timestamp must be a string, got ${show(value)}`);
  check(ISO_8601.test(value), `${where}: timestamp ${show(value)} is not ISO 8601`);
  check(!Number.isNaN(Date.parse(value)), `${where}: Date.parse rejects timestamp ${show(value)}`);
}

function checkSeq(where, value) {
  check(Number.isSafeInteger(value) && value >= 0, `${where}: seq must be an integer >= 0, got ${show(value)}`);
}

function withTimeout(promise, what, ms = STEP_TIMEOUT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new CheckError(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// Every event from the server, in order, with a queue per name to wait on.
class Inbox {
  constructor(socket) {
    this.log = [];
    this.queues = new Map();
    this.waiters = new Map();
    this.unexpectedErrors = [];
    this.expectingError = false;
    socket.onAny((name, ...args) => this.#receive(socket, name, args));
  }

  #receive(socket, name, args) {
    const transport = socket.io.engine ? socket.io.engine.transport.name : null;
    this.log.push({ event: name, transport });
    if (args.length !== 1) {
      this.unexpectedErrors.push(`${name} arrived with ${args.length} arguments, expected 1`);
    }
    if (name === "error" && !this.expectingError) {
      this.unexpectedErrors.push(`unexpected error event: ${show(args[0])}`);
    }
    const waiters = this.waiters.get(name);
    if (waiters && waiters.length) {
      waiters.shift()(args[0]);
      return;
    }
    if (!this.queues.has(name)) this.queues.set(name, []);
    this.queues.get(name).push(args[0]);
  }

  next(name, ms = STEP_TIMEOUT_MS) {
    const queue = this.queues.get(name);
    if (queue && queue.length) return Promise.resolve(queue.shift());
    const promise = new Promise((resolve) => {
      if (!this.waiters.has(name)) this.waiters.set(name, []);
      this.waiters.get(name).push(resolve);
    });
    return withTimeout(promise, `the ${show(name)} event`, ms);
  }

  pending(name) {
    return (this.queues.get(name) || []).length;
  }

  assertNoSurprises() {
    check(this.unexpectedErrors.length === 0, this.unexpectedErrors.join("; "));
  }
}

async function http(base, method, path, body) {
  const response = await withTimeout(
    fetch(new URL(path, base), {
      method,
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    }),
    `${method} ${path}`,
  );
  const text = await response.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    fail(`${method} ${path}: answered ${response.status} with non-JSON ${show(text)}`);
  }
  return { status: response.status, json };
}

function checkUpdateEnvelope(message, previousSeq, taskId) {
  const where = `task_status_update ${show(message)}`;
  check(isObject(message), `task_status_update must be an object, got ${show(message)}`);
  check(message.config_name === SUBJECT, `${where}: config_name must be ${SUBJECT}`);
  check(isObject(message.update), `${where}: update must be an object`);
  check(typeof message.update.event === "string", `${where}: update.event must be a string`);
  checkTimestamp(where, message.timestamp);
  checkSeq(where, message.seq);
  check(message.seq > previousSeq, `${where}: seq ${message.seq} is not above the previous ${previousSeq}`);
  check(message.update.task_id === taskId, `${where}: update.task_id must be ${taskId} (from the POST)`);
}

function checkUpdate(message) {
  const update = message.update;
  const where = `${update.event} ${show(message)}`;
  switch (update.event) {
    case "task_started":
      check(update.task_type === "change_ip", `${where}: update.task_type must be "change_ip"`);
      check(update.status === "busy", `${where}: update.status must be "busy"`);
      break;
    case "task_progress":
      check(isObject(update.progress), `${where}: update.progress must be an object`);
      check(typeof update.progress.stage === "string", `${where}: update.progress.stage must be a string`);
      check(typeof update.progress.message === "string", `${where}: update.progress.message must be a string`);
      break;
    case "task_completed":
      check(isObject(update.result), `${where}: update.result must be an object`);
      check(update.result.status === "success", `${where}: update.result.status must be "success"`);
      check(update.status === "idle", `${where}: update.status must be "idle"`);
      break;
    default:
      fail(`unexpected update.event in ${where}`);
  }
}

async function protocolRun(url, mode) {
  const transports = mode === "websocket" ? ["websocket"] : ["polling", "websocket"];
  const socket = io(url, {
    transports,
    upgrade: mode === "polling-upgrade",
    reconnection: false,
    autoConnect: false,
    timeout: STEP_TIMEOUT_MS,
  });
  activeSocket = socket;
  const inbox = new Inbox(socket);
  const disconnects = [];
  socket.on("disconnect", (reason) => disconnects.push(reason));
  const connectError = new Promise((_, reject) => {
    socket.on("connect_error", (err) => {
      const detail = err.description?.message ?? err.description;
      reject(new CheckError(`connect_error: ${err.message}${detail === undefined ? "" : " " + show(detail)}`));
    });
  });
  connectError.catch(() => {}); // only raced below, never left unhandled

  let firstTransport = null;
  let upgradedTo = null;
  let upgradeEventTransport = null;
  const upgraded = new Promise((resolve) => {
    socket.io.on("open", () => {
      const engine = socket.io.engine;
      firstTransport = engine.transport.name;
      engine.on("upgrade", (transport) => {
        // Read it after the event, as a client would: the engine must now be on it.
        upgradedTo = socket.io.engine.transport.name;
        upgradeEventTransport = transport.name;
        resolve();
      });
    });
  });

  socket.connect();
  await Promise.race([withTimeout(new Promise((r) => socket.once("connect", r)), "connect"), connectError]);

  // connection_status {status: "connected", client_id: <socket.id>}
  const status = await inbox.next("connection_status");
  check(isObject(status), `connection_status must be an object, got ${show(status)}`);
  check(status.status === "connected", `connection_status.status must be "connected": ${show(status)}`);
  check(typeof socket.id === "string" && socket.id.length > 0, `socket.id is ${show(socket.id)}`);
  check(status.client_id === socket.id, `connection_status.client_id ${show(status.client_id)} != socket.id ${show(socket.id)}`);

  if (mode === "polling-upgrade") {
    check(firstTransport === "polling", `expected to open on polling, opened on ${firstTransport}`);
    await withTimeout(upgraded, "the upgrade to websocket");
    check(upgradeEventTransport === "websocket", `"upgrade" reported ${upgradeEventTransport}, not websocket`);
    check(upgradedTo === "websocket", `after "upgrade" the engine is on ${upgradedTo}, not websocket`);
  } else {
    check(firstTransport === "websocket", `expected to open on websocket, opened on ${firstTransport}`);
  }

  // get_all_tasks -> all_tasks {aws01: status, aws02: status, aws03: status}, as the original sent it
  socket.emit("get_all_tasks");
  const all = await inbox.next("all_tasks");
  check(isObject(all), `all_tasks must be an object: ${show(all)}`);
  check(show(Object.keys(all).sort()) === show(CONFIGS), `all_tasks must hold exactly ${show(CONFIGS)}: ${show(all)}`);
  for (const name of CONFIGS) {
    check(isObject(all[name]) && all[name].config_name === name, `all_tasks.${name}: ${show(all[name])}`);
    check(["idle", "busy"].includes(all[name].status), `all_tasks.${name}.status: ${show(all[name])}`);
  }

  // subscribe_task -> task_status {config_name, status: {status, ...}, seq}
  socket.emit("subscribe_task", { config_name: SUBJECT });
  const snapshot = await inbox.next("task_status");
  const snapWhere = `task_status ${show(snapshot)}`;
  check(isObject(snapshot), `task_status must be an object, got ${show(snapshot)}`);
  check(snapshot.config_name === SUBJECT, `${snapWhere}: config_name must be ${SUBJECT}`);
  check(isObject(snapshot.status), `${snapWhere}: status must be an object`);
  check(["idle", "busy"].includes(snapshot.status.status), `${snapWhere}: status.status must be idle or busy`);
  check(snapshot.status.status === "idle", `${snapWhere}: ${SUBJECT} should be idle before the test starts a task`);
  checkSeq(snapWhere, snapshot.seq);
  checkTimestamp(snapWhere, snapshot.timestamp);

  // Start a task over REST; collect its updates until task_completed.
  const started = await http(url, "POST", `/api/tasks/${SUBJECT}`, { task_type: "change_ip" });
  check(started.status === 202, `POST /api/tasks/${SUBJECT} answered ${started.status}: ${show(started.json)}`);
  check(typeof started.json.task_id === "string" && started.json.task_id, `POST answer lacks task_id: ${show(started.json)}`);
  const taskId = started.json.task_id;

  const updates = [];
  let previousSeq = snapshot.seq;
  for (;;) {
    const message = await inbox.next("task_status_update");
    checkUpdateEnvelope(message, previousSeq, taskId);
    previousSeq = message.seq;
    checkUpdate(message);
    updates.push(message);
    if (message.update.event === "task_completed") break;
  }
  const kinds = updates.map((m) => m.update.event);
  check(kinds[0] === "task_started", `the first update must be task_started: ${show(kinds)}`);
  check(kinds.filter((k) => k === "task_started").length === 1, `more than one task_started: ${show(kinds)}`);
  check(kinds.includes("task_progress"), `no task_progress arrived: ${show(kinds)}`);

  // A malformed subscribe_task gets an error naming the event; the connection survives.
  inbox.expectingError = true;
  socket.emit("subscribe_task", 42);
  const error = await inbox.next("error");
  inbox.expectingError = false;
  check(isObject(error), `error must be an object, got ${show(error)}`);
  check(error.event === "subscribe_task", `error.event must be "subscribe_task": ${show(error)}`);
  check(typeof error.message === "string" && error.message, `error.message must be a non-empty string: ${show(error)}`);

  // unsubscribe_task -> unsubscribed {config_name}
  socket.emit("unsubscribe_task", { config_name: SUBJECT });
  const unsubscribed = await inbox.next("unsubscribed");
  check(isObject(unsubscribed) && unsubscribed.config_name === SUBJECT, `unsubscribed: ${show(unsubscribed)}`);

  // After unsubscribing, another task's updates must not reach this client.
  const second = await http(url, "POST", `/api/tasks/${SUBJECT}`, { task_type: "change_ip" });
  check(second.status === 202, `second POST answered ${second.status}: ${show(second.json)}`);
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  for (;;) {
    const { status: code, json } = await http(url, "GET", `/api/tasks/${SUBJECT}`);
    check(code === 200, `GET /api/tasks/${SUBJECT} answered ${code}: ${show(json)}`);
    if (json.status?.status === "idle" && json.status?.last?.task_id === second.json.task_id) break;
    check(Date.now() < deadline, `the second task never finished: ${show(json)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  // Anything the server sent before its own task_completed has reached us by now over
  // the one ordered connection: one more round trip makes sure of it.
  socket.emit("get_all_tasks");
  await inbox.next("all_tasks");
  check(inbox.pending("task_status_update") === 0, `updates arrived after unsubscribing: ${inbox.pending("task_status_update")}`);

  inbox.assertNoSurprises();
  check(socket.connected, `the socket disconnected: ${show(disconnects)}`);
  check(disconnects.length === 0, `the socket disconnected: ${show(disconnects)}`);
  const transport = socket.io.engine.transport.name;
  check(transport === "websocket", `ended on transport ${transport}, not websocket`);
  return {
    ok: true,
    mode,
    transport,
    first_transport: firstTransport,
    client_id: socket.id,
    updates: kinds,
    events: inbox.log.map((entry) => entry.event),
    event_transports: [...new Set(inbox.log.map((entry) => entry.transport))],
  };
}

async function foreignOriginRun(url, transport) {
  const socket = io(url, {
    transports: [transport],
    upgrade: false,
    reconnection: false,
    autoConnect: false,
    timeout: STEP_TIMEOUT_MS,
    extraHeaders: { Origin: FOREIGN_ORIGIN },
  });
  activeSocket = socket;
  const outcome = new Promise((resolve) => {
    socket.on("connect", () => resolve({ connected: true }));
    socket.on("connect_error", (err) => resolve({ connected: false, err }));
  });
  socket.connect();
  const { connected, err } = await withTimeout(outcome, "connect or connect_error");
  check(!connected, `the server accepted a ${transport} connection with Origin: ${FOREIGN_ORIGIN} (id ${socket.id})`);
  // polling: the description is the HTTP status; websocket: an error from ws naming it.
  // A WSGI server answers a refused handshake 400; an ASGI server answers a websocket
  // closed before it was accepted 403 (the ASGI specification's rule).
  const description = err.description?.message ?? err.description;
  const refusedWith = (status) =>
    description === status || (typeof description === "string" && description.includes(` ${status}`));
  check(
    refusedWith(400) || (transport === "websocket" && refusedWith(403)),
    `expected the ${transport} handshake to be refused (400, or 403 for a websocket on ASGI), got ${show(description)} (${err.message})`,
  );
  return { ok: true, mode: `foreign-origin-${transport}`, transport, refused: true, error: err.message, description: String(description), events: [] };
}

async function main() {
  const [url, mode] = process.argv.slice(2);
  if (mode === "websocket" || mode === "polling-upgrade") return protocolRun(url, mode);
  if (mode === "foreign-origin-polling") return foreignOriginRun(url, "polling");
  if (mode === "foreign-origin-websocket") return foreignOriginRun(url, "websocket");
  fail(`usage: node protocol_client.mjs <server-url> ${MODES.join("|")}; got ${show(url)} ${show(mode)}`);
}

const overall = setTimeout(() => {
  finish({ ok: false, error: `overall timeout: no result after ${OVERALL_TIMEOUT_MS} ms` });
}, OVERALL_TIMEOUT_MS);

process.on("unhandledRejection", (reason) => {
  finish({ ok: false, error: `unhandled rejection: ${reason?.stack ?? String(reason)}` });
});
process.on("uncaughtException", (err) => {
  finish({ ok: false, error: `uncaught exception: ${err?.stack ?? String(err)}` });
});

main().then(
  (result) => {
    clearTimeout(overall);
    finish(result);
  },
  (err) => {
    clearTimeout(overall);
    finish({ ok: false, error: err instanceof CheckError ? err.message : err?.stack ?? String(err) });
  },
);
