// DOM helpers. Data from the API only ever becomes text nodes or property values, never markup.

// el("td", {className: "x", onclick: f}, "text", child): props are set by this code, children are
// nodes or strings (a string is appended as text).
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node[name] = value;
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

export const $ = (selector) => document.querySelector(selector);

export const TERMINAL = new Set(["RUN_STATE_COMPLETED", "RUN_STATE_FAILED", "RUN_STATE_CANCELLED"]);

export const shortState = (state) => (state ?? "").replace("RUN_STATE_", "");

export function stateBadge(state) {
  return el("span", { className: "state", dataset: { state: shortState(state) } }, shortState(state));
}

export function when(timestamp) {
  if (!timestamp) return "";
  const date = new Date(timestamp);
  return Number.isNaN(date.getTime()) ? timestamp : date.toLocaleString();
}

export function clip(text, length = 60) {
  const value = text ?? "";
  return value.length > length ? `${value.slice(0, length - 1)}…` : value;
}

export function prettyJson(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text ?? "";
  }
}

let noticeTimer = 0;

// One line of feedback at the top. `source` names what set it: only that part clears it again
// (a list refresh that works clears its own error, not a failed Approve's).
export function notice(message, { kind = "error", source = "" } = {}) {
  const node = $("#notice");
  if (!message && node.dataset.source !== source) return;
  clearTimeout(noticeTimer);
  node.hidden = !message;
  node.textContent = message ?? "";
  node.dataset.kind = kind;
  node.dataset.source = source;
  if (message && kind === "info") noticeTimer = setTimeout(() => notice("", { source }), 4000);
}

export function explain(error) {
  if (error.status === 401) return `${error.message} (401): enter an API key above.`;
  if (error.status === 403) return `${error.message} (403): this key may not do that.`;
  return error.status ? `${error.message} (${error.status})` : error.message;
}
