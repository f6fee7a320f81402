// The canonical REST API (/v1, ProtoJSON) as the console uses it: every call carries the API key as
// a Bearer header, and a run's stream is read with fetch (EventSource cannot send headers).

const KEY = "agentrun.console.apiKey";

export function apiKey() {
  return sessionStorage.getItem(KEY) ?? localStorage.getItem(KEY) ?? "";
}

// sessionStorage ends with the tab; `remember` keeps the key in localStorage across visits.
export function setApiKey(key, remember) {
  sessionStorage.removeItem(KEY);
  localStorage.removeItem(KEY);
  if (key) (remember ? localStorage : sessionStorage).setItem(KEY, key);
}

export function keyRemembered() {
  return localStorage.getItem(KEY) !== null;
}

export class ApiError extends Error {
  constructor(status, body) {
    const error = body?.error ?? {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.status ?? "";
  }
}

function headers(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

const runPath = (id) => `/v1/runs/${encodeURIComponent(id)}`;

// Query values: arrays become repeated parameters; empty ones are left out.
async function call(method, path, { query = {}, body } = {}) {
  const url = new URL(path, location.origin);
  for (const [name, value] of Object.entries(query)) {
    for (const each of [value].flat()) if (each !== "" && each != null) url.searchParams.append(name, each);
  }
  const init = { method, headers: headers({ Accept: "application/json" }) };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url, init);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export const listAgents = async () => (await call("GET", "/v1/agents")).agents ?? [];
export const listRuns = (query) => call("GET", "/v1/runs", { query });
export const getRun = async (id) => (await call("GET", runPath(id))).run;
export const startRun = async (agent, body) =>
  (await call("POST", `/v1/agents/${encodeURIComponent(agent)}/runs`, { body })).run;
export const decide = async (id, body) => (await call("POST", `${runPath(id)}:continue`, { body })).run;
export const cancelRun = async (id) => (await call("POST", `${runPath(id)}:cancel`, { body: {} })).run;
export const deliveries = async (id) =>
  (await call("GET", `${runPath(id)}/webhookDeliveries`)).deliveries ?? [];
export const retryDelivery = (id, delivery) =>
  call("POST", `${runPath(id)}/webhookDeliveries/${encodeURIComponent(delivery)}:retry`, { body: {} });

export async function storedEvents(id) {
  const events = [];
  let token = "";
  do {
    const page = await call("GET", `${runPath(id)}/events`, { query: { page_size: 1000, page_token: token } });
    events.push(...(page.events ?? []));
    token = page.nextPageToken ?? "";
  } while (token);
  return events;
}

// Streams the run's events after `afterSeq` to onEvent until the stream ends (the run finished or
// paused, or the server went away); an `event: error` frame or a refused stream throws ApiError.
export async function follow(id, afterSeq, onEvent, signal) {
  const init = { headers: headers({ Accept: "text/event-stream", "Last-Event-ID": String(afterSeq) }), signal };
  const response = await fetch(`${runPath(id)}:stream`, init);
  if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => ({})));
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n"); // the gateway writes "\n"; other line ends are still SSE
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = parseFrame(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
      if (frame.event === "error") throw new ApiError(0, JSON.parse(frame.data));
      if (frame.data) onEvent(JSON.parse(frame.data).event);
    }
  }
}

function parseFrame(text) {
  const frame = { event: "message", data: "" };
  const data = [];
  for (const line of text.split("\n")) {
    if (line.startsWith(":")) continue; // a heartbeat
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "data") data.push(value);
    else if (field === "event") frame.event = value;
  }
  frame.data = data.join("\n");
  return frame;
}
