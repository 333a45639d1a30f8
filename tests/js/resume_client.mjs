// One official socket.io-client that subscribes on one server, leaves, and resumes on
// another server of the same deployment (tests/redis/test_cross_process.py).
//
//   node tests/js/resume_client.mjs <url-a> <url-b> <subject>
//
// Driven by JSON lines on stdin, answering each with one JSON line on stdout:
//   {"cmd": "subscribe"}          connect to A, subscribe; -> {"seq", "stream"} of the snapshot
//   {"cmd": "until", "seq": N}    -> {"seqs": [...]} the updates that came until seq N, and
//                                    "stream", the stream id of the current connection
//   {"cmd": "leave"}              disconnect -> {"ok": true}
//   {"cmd": "resume", "since": N} connect to B, subscribe with since N and A's stream id;
//                                    -> {"replayed": [...], "snapshot": {...}, "stream"}
// A failure answers {"ok": false, "error": "..."} and exits 1. Every wait is bounded, and the
// whole script gives up after OVERALL_TIMEOUT_MS.

import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const STEP_TIMEOUT_MS = 8_000;
const OVERALL_TIMEOUT_MS = 60_000;

const [urlA, urlB, subject] = process.argv.slice(2);
let socket = null;
let stream = null; // the stream id of the first connection
let current = null; // of the current one
const inbox = [];
let wake = null;

function answer(result) {
  process.stdout.write(JSON.stringify(result) + "\n");
}

function fail(message) {
  if (socket) socket.disconnect();
  process.stdout.write(JSON.stringify({ ok: false, error: message }) + "\n", () => process.exit(1));
}

setTimeout(() => fail(`gave up after ${OVERALL_TIMEOUT_MS} ms`), OVERALL_TIMEOUT_MS).unref();

// The next event named `name` (others before it are kept, in order, in `skipped`).
async function next(name, skipped = []) {
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  for (;;) {
    const index = inbox.findIndex((item) => item[0] === name);
    if (index >= 0) {
      skipped.push(...inbox.splice(0, index));
      return inbox.shift()[1];
    }
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`no ${name} within ${STEP_TIMEOUT_MS} ms`);
    await new Promise((resolve) => {
      wake = resolve;
      setTimeout(resolve, left);
    });
  }
}

async function connect(url) {
  inbox.length = 0;
  socket = io(url, { transports: ["websocket"], reconnection: false, forceNew: true });
  socket.onAny((name, payload) => {
    inbox.push([name, payload]);
    if (wake) wake();
  });
  socket.on("connect_error", (error) => fail(`cannot connect to ${url}: ${error.message}`));
  const greeting = await next("connection_status");
  current = greeting.stream;
  return greeting;
}

const commands = {
  async subscribe() {
    const greeting = await connect(urlA);
    stream = greeting.stream;
    socket.emit("subscribe_task", { config_name: subject });
    const snapshot = await next("task_status");
    return { seq: snapshot.seq, stream };
  },
  async until({ seq }) {
    const seqs = [];
    while (seqs.length === 0 || seqs[seqs.length - 1] < seq) {
      const update = await next("task_status_update");
      if (update.config_name === subject) seqs.push(update.seq);
    }
    return { seqs, stream: current };
  },
  async leave() {
    socket.disconnect();
    socket = null;
    return { ok: true };
  },
  async resume({ since }) {
    await connect(urlB);
    socket.emit("subscribe_task", { config_name: subject, since, stream });
    const before = [];
    const snapshot = await next("task_status", before);
    const replayed = before.filter(([name]) => name === "task_status_update").map(([, p]) => p);
    return { replayed, snapshot, stream: current };
  },
};

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  let command;
  try {
    command = JSON.parse(line);
    const run = commands[command.cmd];
    if (!run) throw new Error(`unknown command ${JSON.stringify(command.cmd)}`);
    answer(await run(command));
  } catch (error) {
    fail(error.message);
  }
}
if (socket) socket.disconnect();
process.exit(0);
