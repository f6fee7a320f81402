// One run in detail: its state and actions (Approve / Reject a pending tool call, Cancel), the
// transcript of its events (stored ones first, then live from the stream), the result, usage,
// webhook deliveries (Retry) and the raw event log.

import * as api from "./api.js";
import { $, TERMINAL, el, explain, notice, prettyJson, shortState, stateBadge, when } from "./dom.js";

const PAUSED = "RUN_STATE_PAUSED";
// Events after which the stored run has changed in ways the stream does not carry (state, usage).
const CHANGES = new Set(["EVENT_TYPE_STATUS", "EVENT_TYPE_PAUSED", "EVENT_TYPE_STOP", "EVENT_TYPE_ERROR"]);

let view = null; // the open run
let onChange = () => {};

export const currentId = () => view?.id ?? null;
export const setOnChange = (callback) => (onChange = callback);
const settled = (run) => !run || TERMINAL.has(run.state) || run.state === PAUSED;
// The stream is followed while the run goes on, and also while the stored run is ahead of the
// events shown (it moved on between two reads): the re-attach brings the missing ones.
const behind = (v) => v.run && (!settled(v.run) || Number(v.run.lastSeq ?? 0) > v.lastSeq);

export async function show(id) {
  if (view?.id === id) return;
  hide();
  const v = (view = newView(id));
  const section = $("#detail");
  section.replaceChildren(...Object.values(v.parts));
  section.hidden = false;
  try {
    const [run, events, deliveries] = await Promise.all([
      api.getRun(id),
      api.storedEvents(id),
      api.deliveries(id),
    ]);
    if (v !== view) return;
    for (const event of events) addEvent(v, event);
    setDeliveries(v, deliveries);
    setRun(v, run);
    notice("", { source: "detail" });
  } catch (error) {
    if (v === view) notice(explain(error), { source: "detail" });
  }
}

export function hide() {
  view?.abort.abort();
  view = null;
  $("#detail").hidden = true;
  $("#detail").replaceChildren();
}

export function reload() {
  const id = currentId();
  hide();
  if (id) show(id);
}

// Called on the console's poll interval: only what a stream does not tell is asked for.
export function tick() {
  const v = view;
  if (!v?.run) return;
  const pending = v.deliveries.some((d) => d.state === "WEBHOOK_DELIVERY_STATE_PENDING");
  const awaited = TERMINAL.has(v.run.state) && v.run.webhookUrl && v.deliveries.length === 0;
  if (v.run.state === PAUSED || pending || awaited) refreshSoon(v); // decided elsewhere, or webhooks
  else if (behind(v)) follow(v);
}

function newView(id) {
  const rows = el("tbody");
  const head = el("thead", {}, row("th", "seq", "time", "type", "payload"));
  const parts = { // in page order
    header: el("div", { className: "run-header" }),
    actions: el("div", { className: "actions" }),
    pending: el("div", { id: "pending", hidden: true }),
    title: el("h3", {}, "Transcript"),
    transcript: el("div", { id: "transcript" }),
    result: el("div", { id: "result" }),
    usage: el("dl", { id: "usage" }),
    deliveries: el("div", { id: "deliveries" }),
    log: el("details", {}, el("summary", {}, "Stored events"), el("table", { id: "events" }, head, rows)),
  };
  return { id, run: null, lastSeq: 0, deliveries: [], tools: new Map(), block: null, pendingKey: "",
    following: false, refreshing: null, again: false, abort: new AbortController(), parts, rows };
}

function row(cell, ...values) {
  return el("tr", {}, values.map((value) => el(cell, {}, value)));
}

// ---- the run -----------------------------------------------------------------------------------

function setRun(v, run) {
  const changed = v.run !== null && v.run.state !== run.state;
  v.run = run;
  renderHeader(v);
  renderPending(v);
  renderResult(v);
  if (changed) onChange();
  if (behind(v)) follow(v);
}

// Re-reads the run and its deliveries; calls made while one is in flight share it (and make it
// read once more, so nothing that happened meanwhile is missed).
function refreshSoon(v) {
  if (v.refreshing) {
    v.again = true;
    return v.refreshing;
  }
  v.refreshing = (async () => {
    try {
      do {
        v.again = false;
        const [run, deliveries] = await Promise.all([api.getRun(v.id), api.deliveries(v.id)]);
        if (v !== view) return;
        setDeliveries(v, deliveries);
        setRun(v, run);
      } while (v.again);
    } catch (error) {
      if (v === view) notice(explain(error), { source: "detail" });
    } finally {
      v.refreshing = null;
    }
  })();
  return v.refreshing;
}

// Follows the run's stream from the last seq seen until the run finishes or pauses; re-attaches
// (Last-Event-ID) when a stream ends early, e.g. the server restarted.
async function follow(v) {
  if (v.following) return;
  v.following = true;
  v.parts.header.classList.add("live");
  try {
    while (v === view && behind(v)) {
      const before = v.lastSeq;
      try {
        await api.follow(v.id, v.lastSeq, (event) => addEvent(v, event), v.abort.signal);
        notice("", { source: "stream" });
      } catch (error) {
        if (v.abort.signal.aborted) return;
        notice(`Stream: ${explain(error)}`, { source: "stream" });
      }
      if (v !== view) return;
      await refreshSoon(v);
      if (v.lastSeq === before) await idle(1000, v.abort.signal); // nothing new: do not spin
    }
  } finally {
    v.following = false;
    v.parts.header.classList.remove("live");
  }
}

function idle(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => (clearTimeout(timer), resolve()), { once: true });
  });
}

async function act(v, button, action, done) {
  button.disabled = true;
  try {
    setRun(v, await action());
    notice(done, { kind: "info", source: "action" });
  } catch (error) {
    notice(explain(error), { source: "action" });
    button.disabled = false;
  }
}

function renderHeader(v) {
  const run = v.run;
  const input = run.input?.message ?? "";
  v.parts.header.replaceChildren(
    el("h2", {}, `Run #${run.number ?? "?"} `, el("span", { id: "run-state" }, stateBadge(run.state)),
      el("span", { className: "live-dot", title: "following the live stream" }, " ● live")),
    el("dl", { className: "meta" },
      ...pair("id", run.id), ...pair("agent", run.agentId), ...pair("session", run.sessionId),
      ...pair("created", when(run.createTime)), ...pair("updated", when(run.updateTime)),
      ...pair("attempt", run.attempt ?? 1), ...pair("input", input)),
  );
  const cancel = el("button", { id: "cancel-run", type: "button", disabled: TERMINAL.has(run.state) }, "Cancel");
  cancel.addEventListener("click", () => act(v, cancel, () => api.cancelRun(v.id), "Cancel requested."));
  v.parts.actions.replaceChildren(cancel);
}

function pair(name, value) {
  return [el("dt", {}, name), el("dd", {}, value === undefined || value === "" ? "—" : String(value))];
}

// Rebuilt only when the pending call changes, so a reason being typed survives the refreshes.
function renderPending(v) {
  const action = v.run.state === PAUSED ? v.run.pendingAction : null;
  const key = action ? action.toolCallId ?? "" : "";
  if (key === v.pendingKey && Boolean(action) === !v.parts.pending.hidden) return;
  v.pendingKey = key;
  v.parts.pending.hidden = !action;
  if (!action) return v.parts.pending.replaceChildren();
  const reason = el("input", { placeholder: "reason (optional)", className: "reason" });
  const decide = (decision) => () =>
    api.decide(v.id, { decision, toolCallId: action.toolCallId ?? "", reason: reason.value.trim() });
  const approve = el("button", { type: "button", className: "approve" }, "Approve");
  const reject = el("button", { type: "button", className: "reject" }, "Reject");
  approve.addEventListener("click", () => act(v, approve, decide("DECISION_APPROVE"), "Approved."));
  reject.addEventListener("click", () => act(v, reject, decide("DECISION_REJECT"), "Rejected."));
  v.parts.pending.replaceChildren(
    el("p", {}, el("strong", {}, action.toolName ?? "a tool"), " is waiting for approval"),
    el("pre", {}, prettyJson(action.argumentsJson)),
    el("div", { className: "decide" }, reason, approve, reject),
  );
}

function renderResult(v) {
  const run = v.run;
  const parts = [];
  if (run.output) parts.push(el("h3", {}, "Output"), el("pre", { className: "output" }, run.output));
  if (run.error) parts.push(el("p", { className: "error" }, `${run.error.reason}: ${run.error.message ?? ""}`));
  if (run.followups?.length) parts.push(el("ul", {}, run.followups.map((f) => el("li", {}, f))));
  v.parts.result.replaceChildren(...parts);
  const usage = run.usage ?? {};
  const fields = [["input tokens", usage.inputTokens], ["output tokens", usage.outputTokens],
    ["reasoning tokens", usage.reasoningTokens], ["model calls", usage.modelCalls],
    ["tool time", `${usage.toolMs ?? 0} ms`], ["duration", `${usage.durationMs ?? 0} ms`]];
  v.parts.usage.replaceChildren(el("h3", {}, "Usage"), ...fields.flatMap(([n, value]) => pair(n, value ?? 0)));
}

function setDeliveries(v, deliveries) {
  v.deliveries = deliveries;
  if (!deliveries.length) return v.parts.deliveries.replaceChildren();
  const rows = deliveries.map((delivery) => {
    const last = delivery.attempts?.at(-1);
    const outcome = last ? last.error || `HTTP ${last.statusCode}` : "not tried yet";
    const retry = el("button", { type: "button", className: "retry" }, "Retry");
    retry.addEventListener("click", async () => {
      retry.disabled = true;
      try {
        await api.retryDelivery(v.id, delivery.id);
        notice("Delivery queued again.", { kind: "info", source: "action" });
        refreshSoon(v);
      } catch (error) {
        notice(explain(error), { source: "action" });
        retry.disabled = false;
      }
    });
    const state = (delivery.state ?? "").replace("WEBHOOK_DELIVERY_STATE_", "");
    return el("tr", { dataset: { state } }, el("td", { className: "delivery-state" }, state),
      el("td", {}, delivery.url ?? ""), el("td", {}, String(delivery.attempts?.length ?? 0)),
      el("td", {}, outcome), el("td", {}, retry));
  });
  const head = row("th", "state", "url", "attempts", "last attempt", "");
  v.parts.deliveries.replaceChildren(el("h3", {}, "Webhook deliveries"),
    el("table", {}, el("thead", {}, head), el("tbody", {}, rows)));
}

// ---- events ------------------------------------------------------------------------------------

function addEvent(v, event) {
  const seq = Number(event.seq);
  if (seq <= v.lastSeq) return; // a re-attach never repeats, but stored and live may overlap
  v.lastSeq = seq;
  const type = (event.type ?? "").replace("EVENT_TYPE_", "");
  v.rows.append(el("tr", {}, el("td", {}, String(seq)), el("td", {}, when(event.createTime)),
    el("td", {}, type), el("td", { className: "payload" }, summary(event))));
  renderEvent(v, type, event);
  if (v.run && (CHANGES.has(event.type) || v.run.state === "RUN_STATE_QUEUED")) refreshSoon(v);
}

function summary(event) {
  const call = event.toolCall;
  if (event.text !== undefined) return event.text;
  if (call) return `${call.name ?? ""} ${call.result ?? call.argumentsJson ?? ""}`;
  const other = event.pendingAction ?? event.error ?? event.status ?? event.stop ?? event.start;
  return other ? JSON.stringify(other) : "";
}

function renderEvent(v, type, event) {
  if (type === "REASONING_DELTA" || type === "CONTENT_DELTA") {
    const kind = type === "CONTENT_DELTA" ? "content" : "reasoning";
    if (v.block?.dataset.kind !== kind) add(v, el("p", { className: kind, dataset: { kind } }));
    return v.block.append(event.text ?? "");
  }
  const call = event.toolCall ?? {};
  if (type === "TOOL_START" || (type === "TOOL_END" && !v.tools.has(call.id))) {
    const block = el("div", { className: "tool" }, el("div", { className: "tool-name" }, `→ ${call.name}`),
      el("pre", {}, prettyJson(call.argumentsJson)), el("div", { className: "tool-result" }, "running…"));
    v.tools.set(call.id, block);
    add(v, block);
  }
  if (type === "TOOL_END") {
    const block = v.tools.get(call.id);
    block.classList.toggle("failed", Boolean(call.isError));
    block.querySelector(".tool-result").textContent = `← ${call.result ?? ""} (${call.durationMs ?? 0} ms)`;
    return;
  }
  const markers = {
    PAUSED: () => `paused: ${event.pendingAction?.toolName ?? "a tool"} needs approval`,
    STATUS: () => `${shortState(event.status?.state)} ${event.status?.reason ?? ""}`,
    STOP: () => "completed",
    ERROR: () => `${event.error?.reason ?? "error"}: ${event.error?.message ?? ""}`,
  };
  if (markers[type]) add(v, el("div", { className: `marker ${type.toLowerCase()}` }, markers[type]()));
}

function add(v, block) {
  v.parts.transcript.append(block);
  v.block = block;
}
