// Load generator for the Socket.IO benchmarks (benchmarks/harness/, driven by control.py): N
// official socket.io-client sockets in one Node process, driven by JSON lines on stdin,
// answering with JSON lines on stdout.
//
//   node benchmarks/loadgen.mjs --url http://127.0.0.1:PORT --clients N --subjects a,b,c
//       [--assign all|spread] [--clock perf|realtime] [--connect-concurrency N]
//
// Each socket connects over WebSocket only (no polling), with permessage-deflate turned
// off (engine.io-client passes `perMessageDeflate: false` to `ws`, so the extension is not
// even offered: the server then sends every frame uncompressed), one connection per
// socket (`forceNew`), no reconnection. It subscribes with `subscribe_task {config_name}`
// and waits for each snapshot (`task_status`), then prints {"ready": true, ...}. With
// `--assign all` (the default) every socket subscribes to every subject; with
// `--assign spread` socket i subscribes to subject i % (number of subjects) only. All
// sockets connect at once, unless `--connect-concurrency N` (N > 0) lets at most N connect
// and subscribe at a time.
//
// Commands (one JSON object per line on stdin):
//   {"cmd": "arm", "id": ID, "group": G, "subject": S, "timeout_ms": T, "detail": bool}
//       start recording `task_status_update` messages of subject S; answers
//       {"armed": ID}. The phase ends when every socket subscribed to S has received a
//       task_completed whose result has `last: true` (or after T ms); then it prints
//       {"done": ID, ...} and adds its samples to group G. "subjects": [S, ...] instead
//       of "subject" records several subjects in one phase (it ends when every socket
//       subscribed to any of them is done). `per_client_lifecycle` in the answer counts,
//       per socket of the phase, the lifecycle updates (task_started, task_completed,
//       task_failed, task_cancelled) it received.
//   {"cmd": "report", "group": G}   pooled statistics of group G (then forgets it)
//   {"cmd": "quit"}                  disconnect and exit (so does the end of stdin)
//
// Latency of a message = its receive time - the send time it carries: `sent_ms` (a float
// of milliseconds since the epoch, set by the server just before the emit call) in the
// update's `details`, `result` or `progress`, else the ISO `timestamp` (millisecond
// resolution). Both clocks are the same machine's wall clock. With `--clock realtime`,
// the default, the receive time reads the wall clock at every message: Date.now() + 0.5
// (millisecond resolution, the 0.5 centring its truncation, so no bias on average).
// With `--clock perf` it is performance.timeOrigin + performance.now() (sub-millisecond):
// the monotonic clock from the wall-clock time the process started, which on a machine
// whose wall clock runs apart from its monotonic clock (a VM whose wall clock is
// stepped: one measured here gained 0.5 ms every 100 ms) drifts from the sender's
// time.time() for as long as the process lives. time.time_ns() would not survive
// a JavaScript number (> 2^53), hence milliseconds.
//
// Bounded: connecting gives up after --connect-timeout-ms, every phase after its
// timeout_ms, and the whole process exits after --max-seconds whatever happens.

import { createInterface } from "node:readline";
import { performance } from "node:perf_hooks";
import { io } from "socket.io-client";

function parseArgs(argv) {
  const options = {
    url: "http://127.0.0.1:5000",
    clients: 1,
    subjects: "",
    connectTimeoutMs: 30000,
    maxSeconds: 900,
    assign: "all",
    clock: "realtime",
    connectConcurrency: 0,
  };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "").replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (!(key in options) || i + 1 >= argv.length) {
      throw new Error(`unknown or incomplete option ${argv[i]}`);
    }
    const value = argv[i + 1];
    options[key] = typeof options[key] === "number" ? Number(value) : value;
  }
  options.subjects = options.subjects.split(",").filter(Boolean);
  if (!(options.clients >= 1) || options.subjects.length === 0) {
    throw new Error("need --clients >= 1 and --subjects");
  }
  if (options.assign !== "all" && options.assign !== "spread") {
    throw new Error("--assign is all or spread");
  }
  if (options.clock !== "perf" && options.clock !== "realtime") {
    throw new Error("--clock is perf or realtime");
  }
  return options;
}

const options = parseArgs(process.argv.slice(2));
const now =
  options.clock === "realtime"
    ? () => Date.now() + 0.5
    : () => performance.timeOrigin + performance.now();

function send(message) {
  process.stdout.write(JSON.stringify(message) + "\n");
}

const sockets = [];
let exiting = false;

// The subjects socket i subscribes to (see --assign).
function subjectsOf(index) {
  if (options.assign === "spread") return [options.subjects[index % options.subjects.length]];
  return options.subjects;
}

function shutdown(code) {
  if (exiting) return;
  exiting = true;
  for (const socket of sockets) socket.disconnect();
  // Let stdout drain, then leave even if a socket still holds the event loop.
  setTimeout(() => process.exit(code), 50);
}

const lifetime = setTimeout(() => {
  send({ error: `loadgen: --max-seconds ${options.maxSeconds} reached, exiting` });
  shutdown(3);
}, options.maxSeconds * 1000);

// -- statistics ------------------------------------------------------------------------

function percentile(sorted, q) {
  if (sorted.length === 0) return null;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank];
}

function latencyStats(values) {
  const sorted = Float64Array.from(values).sort();
  let sum = 0;
  for (const v of sorted) sum += v;
  return {
    n: sorted.length,
    mean_ms: sorted.length ? sum / sorted.length : null,
    min_ms: sorted.length ? sorted[0] : null,
    p50_ms: percentile(sorted, 0.5),
    p90_ms: percentile(sorted, 0.9),
    p99_ms: percentile(sorted, 0.99),
    max_ms: sorted.length ? sorted[sorted.length - 1] : null,
  };
}

function sentMs(message) {
  const update = message.update || {};
  for (const part of [update.details, update.result, update.progress]) {
    if (part && typeof part.sent_ms === "number") return part.sent_ms;
  }
  return Date.parse(message.timestamp);
}

// -- phases ----------------------------------------------------------------------------

const active = new Map(); // subject -> phase
const groups = new Map(); // group -> pooled samples
let stray = 0; // messages for a subject no phase is recording

function newClient() {
  return {
    received: 0,
    lifecycle: 0,
    byType: {},
    lastSeq: 0,
    seqErrors: 0,
    done: false,
    progressTimes: [],
    startedLatency: [],
    completedLatency: [],
    firstRecv: null,
    lastRecv: null,
  };
}

const LIFECYCLE = new Set(["task_started", "task_completed", "task_failed", "task_cancelled"]);

function arm(command) {
  const subjects = Array.isArray(command.subjects) ? command.subjects : [command.subject];
  for (const subject of subjects) {
    if (active.has(subject)) {
      send({ error: `a phase is already recording ${subject}` });
      return;
    }
  }
  const recorded = new Set(subjects);
  // One entry per socket subscribed to a recorded subject (the phase's clients), null
  // for the others.
  const slots = sockets.map((_, i) =>
    subjectsOf(i).some((subject) => recorded.has(subject)) ? newClient() : null,
  );
  const phase = {
    id: command.id,
    group: command.group,
    subjects,
    detail: Boolean(command.detail),
    slots,
    clients: slots.filter((c) => c !== null),
    latencies: [],
    firstSent: Infinity,
    lastRecv: -Infinity,
    doneCount: 0,
    disconnects: 0,
    armedAt: now(),
    cpu: process.cpuUsage(),
    timer: null,
  };
  phase.timer = setTimeout(() => finish(phase, true), command.timeout_ms);
  for (const subject of subjects) active.set(subject, phase);
  send({ armed: command.id });
  if (phase.clients.length === 0) finish(phase, false);
}

function record(index, message) {
  const t = now();
  const phase = active.get(message.config_name);
  if (phase === undefined) {
    stray += 1;
    return;
  }
  const client = phase.slots[index];
  if (client === null) {
    stray += 1;
    return;
  }
  const update = message.update || {};
  const type = update.event;
  const sent = sentMs(message);
  const latency = t - sent;
  client.received += 1;
  if (LIFECYCLE.has(type)) client.lifecycle += 1;
  client.byType[type] = (client.byType[type] || 0) + 1;
  if (typeof message.seq === "number") {
    if (client.lastSeq && message.seq <= client.lastSeq) client.seqErrors += 1;
    client.lastSeq = message.seq;
  }
  if (client.firstRecv === null) client.firstRecv = t;
  client.lastRecv = t;
  if (sent < phase.firstSent) phase.firstSent = sent;
  if (t > phase.lastRecv) phase.lastRecv = t;
  phase.latencies.push(latency);
  if (type === "task_progress") {
    if (phase.detail) client.progressTimes.push(t);
  } else if (type === "task_started") {
    if (phase.detail) client.startedLatency.push(latency);
  } else if (type === "task_completed") {
    if (phase.detail) client.completedLatency.push(latency);
    if (update.result && update.result.last === true && !client.done) {
      client.done = true;
      phase.doneCount += 1;
      if (phase.doneCount === phase.clients.length) finish(phase, false);
    }
  }
}

function finish(phase, timedOut) {
  if (active.get(phase.subjects[0]) !== phase) return;
  for (const subject of phase.subjects) active.delete(subject);
  clearTimeout(phase.timer);
  const cpu = process.cpuUsage(phase.cpu);
  const wallMs = now() - phase.armedAt;
  const received = phase.clients.reduce((sum, c) => sum + c.received, 0);
  const windowMs = received ? phase.lastRecv - phase.firstSent : 0;
  const seqErrors = phase.clients.reduce((sum, c) => sum + c.seqErrors, 0);
  let group = groups.get(phase.group);
  if (group === undefined) {
    group = {
      phases: 0,
      received: 0,
      windowMs: 0,
      latencies: [],
      cpuMs: 0,
      wallMs: 0,
      seqErrors: 0,
      timedOut: 0,
      disconnects: 0,
    };
    groups.set(phase.group, group);
  }
  group.phases += 1;
  group.received += received;
  group.windowMs += windowMs;
  for (const v of phase.latencies) group.latencies.push(v);
  group.cpuMs += (cpu.user + cpu.system) / 1000;
  group.wallMs += wallMs;
  group.seqErrors += seqErrors;
  group.timedOut += timedOut ? 1 : 0;
  group.disconnects += phase.disconnects;
  const result = {
    done: phase.id,
    timed_out: timedOut,
    clients_done: phase.doneCount,
    received,
    per_client_received: phase.clients.map((c) => c.received),
    per_client_lifecycle: phase.clients.map((c) => c.lifecycle),
    window_ms: windowMs,
    seq_errors: seqErrors,
    disconnects: phase.disconnects,
    loadgen_cpu_ms: (cpu.user + cpu.system) / 1000,
    wall_ms: wallMs,
  };
  if (phase.detail) {
    result.clients = phase.clients.map((c) => ({
      received: c.received,
      by_type: c.byType,
      last_seq: c.lastSeq,
      seq_errors: c.seqErrors,
      // Receive times of the progress updates, relative to the client's first message.
      progress_ms: c.progressTimes.map((t) => t - c.firstRecv),
      window_ms: c.firstRecv === null ? 0 : c.lastRecv - c.firstRecv,
      started_latency_ms: c.startedLatency,
      completed_latency_ms: c.completedLatency,
    }));
    result.latency = latencyStats(phase.latencies);
  }
  send(result);
}

function report(name) {
  const group = groups.get(name);
  groups.delete(name);
  if (group === undefined) {
    send({ report: name, phases: 0 });
    return;
  }
  send({
    report: name,
    phases: group.phases,
    received: group.received,
    window_ms: group.windowMs,
    delivered_per_s: group.windowMs > 0 ? (group.received * 1000) / group.windowMs : null,
    latency: latencyStats(group.latencies),
    loadgen_cpu_ms: group.cpuMs,
    loadgen_wall_ms: group.wallMs,
    seq_errors: group.seqErrors,
    timed_out: group.timedOut,
    disconnects: group.disconnects,
  });
}

// -- connecting ------------------------------------------------------------------------

function connectOne(index) {
  return new Promise((resolve, reject) => {
    const socket = io(options.url, {
      transports: ["websocket"],
      forceNew: true,
      reconnection: false,
      perMessageDeflate: false,
      timeout: options.connectTimeoutMs,
    });
    sockets[index] = socket;
    const pending = new Set(subjectsOf(index));
    socket.on("connect_error", (err) => reject(new Error(`client ${index}: ${err.message}`)));
    socket.on("error", (payload) => {
      send({ warning: `client ${index}: error ${JSON.stringify(payload)}` });
    });
    socket.on("task_status", (payload) => {
      pending.delete(payload.config_name);
      if (pending.size === 0) resolve();
    });
    socket.on("task_status_update", (message) => record(index, message));
    socket.on("disconnect", (reason) => {
      if (exiting) return;
      for (const phase of new Set(active.values())) phase.disconnects += 1;
      send({ warning: `client ${index} disconnected: ${reason}` });
    });
    socket.on("connect", () => {
      for (const subject of subjectsOf(index)) {
        socket.emit("subscribe_task", { config_name: subject });
      }
    });
  });
}

async function main() {
  const started = now();
  let ready = 0;
  const timeout = new Promise((_, reject) => {
    setTimeout(() => {
      const waited = Math.round(now() - started);
      reject(new Error(`connect timeout: ${ready} of ${options.clients} ready after ${waited} ms`));
    }, options.connectTimeoutMs).unref();
  });
  let connections;
  if (options.connectConcurrency > 0) {
    // At most N sockets connecting and subscribing at a time (each lane takes the next
    // socket once its previous one has its snapshots).
    let next = 0;
    const lane = async () => {
      while (next < options.clients) {
        const index = next++;
        await connectOne(index);
        ready += 1;
      }
    };
    const lanes = Math.min(options.connectConcurrency, options.clients);
    connections = Array.from({ length: lanes }, lane);
  } else {
    connections = Array.from({ length: options.clients }, (_, i) =>
      connectOne(i).then(() => {
        ready += 1;
      }),
    );
  }
  await Promise.race([Promise.all(connections), timeout]);
  const extensions = new Set();
  for (const socket of sockets) {
    const ws = socket.io.engine && socket.io.engine.transport && socket.io.engine.transport.ws;
    extensions.add(ws ? String(ws.extensions || "") : "?");
  }
  send({
    ready: true,
    clients: sockets.length,
    assign: options.assign,
    clock: options.clock,
    connect_ms: now() - started,
    transport: sockets[0].io.engine.transport.name,
    ws_extensions: [...extensions],
  });
  const lines = createInterface({ input: process.stdin });
  lines.on("line", (line) => {
    if (!line.trim()) return;
    let command;
    try {
      command = JSON.parse(line);
    } catch {
      send({ error: `not JSON: ${line.slice(0, 80)}` });
      return;
    }
    if (command.cmd === "arm") arm(command);
    else if (command.cmd === "report") report(command.group);
    else if (command.cmd === "quit") {
      clearTimeout(lifetime);
      send({ bye: true, stray });
      shutdown(0);
    } else send({ error: `unknown command ${command.cmd}` });
  });
  lines.on("close", () => shutdown(0));
}

main().catch((err) => {
  send({ error: `loadgen: ${err.message}` });
  shutdown(1);
});
