// The console's page: the API key, the new-run form, the filtered runs list (re-listed every few
// seconds while the tab is visible: one request, however many runs are live) and the detail view
// of the run named in the URL's hash (#/runs/<id>).

import * as api from "./api.js";
import { $, clip, el, explain, notice, stateBadge, when } from "./dom.js";
import * as detail from "./detail.js";

const POLL_MS = 2000;
const ACTIVE = ["RUN_STATE_QUEUED", "RUN_STATE_RUNNING", "RUN_STATE_PAUSED"];
let listed = 0; // number of the latest list request: older answers are dropped
let listing = false;
let agentsLoaded = false;

function filters() {
  const state = $("#filter-state").value;
  const time = (selector) => ($(selector).value ? new Date($(selector).value).toISOString() : "");
  return {
    agent_id: $("#filter-agent").value,
    session_id: $("#filter-session").value.trim(),
    states: state === "active" ? ACTIVE : state,
    create_time_after: time("#filter-after"),
    create_time_before: time("#filter-before"),
    page_size: 50,
  };
}

async function refreshList() {
  const number = ++listed;
  try {
    const page = await api.listRuns(filters());
    if (number !== listed) return;
    renderRuns(page.runs ?? [], Number(page.totalSize ?? 0));
    notice("", { source: "list" });
  } catch (error) {
    if (number === listed) notice(explain(error), { source: "list" });
  }
}

function renderRuns(runs, total) {
  $("#runs-count").textContent = runs.length < total ? `(${runs.length} of ${total})` : `(${total})`;
  const rows = runs.map((run) => {
    const open = () => (location.hash = `#/runs/${encodeURIComponent(run.id)}`);
    const tr = el("tr", { tabIndex: 0, dataset: { id: run.id }, onclick: open },
      el("td", {}, run.number ?? ""), el("td", {}, run.agentId ?? ""), el("td", {}, stateBadge(run.state)),
      el("td", { title: run.sessionId ?? "" }, clip(run.sessionId, 14)), el("td", {}, when(run.createTime)),
      el("td", {}, clip(run.input?.message, 40)));
    tr.addEventListener("keydown", (event) => event.key === "Enter" && open());
    tr.classList.toggle("selected", run.id === detail.currentId());
    return tr;
  });
  if (!rows.length) rows.push(el("tr", { className: "empty" }, el("td", { colSpan: 6 }, "No runs match.")));
  $("#runs tbody").replaceChildren(...rows);
}

async function loadAgents() {
  try {
    const agents = await api.listAgents();
    agentsLoaded = true;
    const options = (selected) => agents.map((a) => el("option", { value: a.id, selected: a.id === selected }, a.id));
    const chosen = $("#filter-agent").value;
    $("#filter-agent").replaceChildren(el("option", { value: "" }, "any"), ...options(chosen));
    $("#new-agent").replaceChildren(...options($("#new-agent").value));
    notice("", { source: "agents" });
  } catch (error) {
    notice(explain(error), { source: "agents" });
  }
}

async function startRun(event) {
  event.preventDefault();
  const session = $("#new-session").value.trim();
  const body = { input: { message: $("#new-message").value } };
  if (session) body.sessionId = session;
  try {
    const run = await api.startRun($("#new-agent").value, body);
    notice("", { source: "new-run" });
    location.hash = `#/runs/${encodeURIComponent(run.id)}`;
    refreshList();
  } catch (error) {
    notice(explain(error), { source: "new-run" });
  }
}

function useKey(event) {
  event.preventDefault();
  const remember = $("#remember-key").checked;
  api.setApiKey($("#api-key").value.trim(), remember);
  const where = remember ? "in this browser" : "for this tab";
  notice($("#api-key").value.trim() ? `API key kept ${where}.` : "No API key.", { kind: "info", source: "key" });
  reloadAll();
}

function forgetKey() {
  api.setApiKey("", false);
  $("#api-key").value = "";
  $("#remember-key").checked = false;
  notice("API key forgotten.", { kind: "info", source: "key" });
  reloadAll();
}

function reloadAll() {
  loadAgents();
  refreshList();
  detail.reload();
}

function route() {
  const match = location.hash.match(/^#\/runs\/(.+)$/);
  if (match) detail.show(decodeURIComponent(match[1]));
  else detail.hide();
  for (const tr of document.querySelectorAll("#runs tbody tr")) {
    tr.classList.toggle("selected", tr.dataset.id === detail.currentId());
  }
}

function poll() {
  if (document.hidden) return;
  if (!agentsLoaded) loadAgents();
  if (!listing) {
    listing = true;
    refreshList().finally(() => (listing = false));
  }
  detail.tick();
}

let typing = 0;

function init() {
  $("#api-key").value = api.apiKey();
  $("#remember-key").checked = api.keyRemembered();
  $("#key-form").addEventListener("submit", useKey);
  $("#forget-key").addEventListener("click", forgetKey);
  $("#new-run").addEventListener("submit", startRun);
  $("#filters").addEventListener("submit", (event) => event.preventDefault());
  $("#filters").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(refreshList, 250); // one request when typing stops
  });
  detail.setOnChange(refreshList);
  window.addEventListener("hashchange", route);
  document.addEventListener("visibilitychange", poll);
  setInterval(poll, POLL_MS);
  loadAgents();
  refreshList();
  route();
}

init();
