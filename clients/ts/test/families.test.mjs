// The gateway's SSE streams as the families' own JavaScript clients read them, through a proxy that
// cuts the first connection mid-stream: family A's POST stream with @microsoft/fetch-event-source
// (which retries the POST with Last-Event-ID), family B's job stream with EventSource (the
// `eventsource` package, which reconnects with Last-Event-ID). Either must pick up where the cut
// left it: no gap, no repeat, no second run. Needs the gateway: AGENTRUN_HTTP=http://host:port.
import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { randomUUID } from "node:crypto";
import { fetchEventSource } from "@microsoft/fetch-event-source";
import { EventSource } from "eventsource";

const GATEWAY = process.env.AGENTRUN_HTTP;
const skip = GATEWAY ? false : "AGENTRUN_HTTP (the gateway's URL) is not set";

// fetch-event-source is written for browsers: it pauses on hidden pages and uses window timers.
globalThis.window ??= globalThis;
globalThis.document ??= { hidden: false, addEventListener() {}, removeEventListener() {} };

/** A TCP proxy to the gateway that drops its first connection once `frames` SSE frames went by. */
async function cuttingProxy(frames) {
  const target = new URL(GATEWAY);
  const state = { connections: 0, cut: false };
  const server = net.createServer((client) => {
    const first = state.connections++ === 0;
    const upstream = net.connect(Number(target.port), target.hostname);
    let seen = 0;
    client.on("data", (chunk) => upstream.write(chunk));
    upstream.on("data", (chunk) => {
      client.write(chunk);
      seen += chunk.toString("latin1").split("\n\n").length - 1;
      if (first && !state.cut && seen >= frames) {
        state.cut = true;
        client.destroy();
        upstream.destroy();
      }
    });
    client.on("error", () => upstream.destroy());
    upstream.on("error", () => client.destroy());
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${server.address().port}`;
  return { url, state, close: () => new Promise((resolve) => server.close(resolve)) };
}

async function json(path, init) {
  const response = await fetch(`${GATEWAY}${path}`, init);
  const text = await response.text();
  assert.ok(response.ok, `${path}: HTTP ${response.status} ${text}`);
  return JSON.parse(text);
}

test("family A: fetch-event-source retries a cut POST stream into the same run", { skip }, async () => {
  const proxy = await cuttingProxy(3);
  const sessionId = randomUUID();
  const frames = [];
  const errors = [];
  try {
    await fetchEventSource(`${proxy.url}/api/agents/slow/runs/stream`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ message: "tokens=10 delay_ms=40", sessionId }),
      openWhenHidden: true,
      onmessage: (message) => frames.push(message),
      onerror: (error) => {
        errors.push(error);
        if (errors.length > 3) throw error; // give up: the test fails
        return 50; // retry after 50 ms, with Last-Event-ID
      },
    });
  } finally {
    await proxy.close();
  }
  assert.ok(proxy.state.cut && proxy.state.connections === 2, "the stream was cut once and retried once");
  const events = frames.map((frame) => JSON.parse(frame.data));
  const runId = JSON.parse(events[0].data).runId;
  assert.deepEqual(
    frames.map((frame) => frame.id),
    frames.map((_, i) => `${runId}:${i + 1}`),
    "ids are <run>:1..n: no gap, no repeat",
  );
  assert.equal(events[0].event, "START");
  assert.equal(events.at(-1).event, "STOP");
  const text = events.filter((e) => e.event === "CONTENT_DELTA").map((e) => e.data).join("");
  assert.equal(text, "t0 t1 t2 t3 t4 t5 t6 t7 t8 t9 ");
  const runs = await json(`/api/sessions/${sessionId}/runs`);
  assert.deepEqual(runs.map((run) => run.id), [runId], "one run, not two");
});

test("family B: EventSource reconnects a cut job stream after its Last-Event-ID", { skip }, async () => {
  const job = await json("/api/v1/runs", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ prompt: "tokens=8 delay_ms=100", recipe_name: "slow" }),
  });
  const proxy = await cuttingProxy(3);
  const received = [];
  try {
    await new Promise((resolve, reject) => {
      const source = new EventSource(`${proxy.url}/api/v1/runs/${job.job_id}/stream`);
      const timer = setTimeout(() => {
        source.close();
        reject(new Error(`the job stream did not end: ${JSON.stringify(received)}`));
      }, 20_000);
      const keep = (name) => (event) => received.push({ name, id: event.lastEventId, data: event.data });
      for (const name of ["status", "progress", "heartbeat", "result", "error", "cancelled", "complete"]) {
        source.addEventListener(name, keep(name));
      }
      source.onmessage = (event) => {
        keep("message")(event);
        if (event.data === "[DONE]") {
          clearTimeout(timer);
          source.close(); // the job is over: no more reconnecting
          resolve();
        }
      };
    });
  } finally {
    await proxy.close();
  }
  assert.ok(proxy.state.cut && proxy.state.connections === 2, "the stream was cut once and reconnected once");
  const names = received.map((frame) => frame.name);
  assert.deepEqual(names.slice(-3), ["result", "complete", "message"]);
  assert.equal(names.filter((name) => name === "result").length, 1);
  const result = JSON.parse(received.find((frame) => frame.name === "result").data);
  assert.equal(result.result, "t0 t1 t2 t3 t4 t5 t6 t7 ", "the whole answer, though the stream was cut");
  const seqs = [...new Set(received.map((frame) => Number(frame.id)))];
  assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), "event ids only grow: nothing sent twice");
  const percentages = received.filter((f) => f.name === "progress").map((f) => JSON.parse(f.data).percentage);
  assert.deepEqual(percentages, [...percentages].sort((a, b) => a - b));
  const done = await json(`/api/v1/runs/${job.job_id}`);
  assert.equal(done.status, "succeeded");
});
