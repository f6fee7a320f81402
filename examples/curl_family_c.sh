#!/usr/bin/env bash
# Family C (WebAgent run API, /api/runs...) through the HTTP gateway, with curl. Its runs go to
# `agentrun serve --gateway-family-c-agent` (default ai-echo); task ids are integers.
#
#   scripts/dev serve                           # in another terminal
#   examples/curl_family_c.sh                   # AGENTRUN_HTTP=http://HOST:PORT to point elsewhere
#
# Needs curl and python3 (to take ids from the JSON answers). 422s are in pydantic's shape.
# tests/test_examples.py runs this file against a real server.
set -euo pipefail
G=${AGENTRUN_HTTP:-http://127.0.0.1:8080}
J='Content-Type: application/json'
pick() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }   # pick '["a"]': a field of JSON on stdin

echo "# a run that waits: AgentResponse (history, result, is_done, status)"
curl -sf "$G/api/runs" -H "$J" -d '{"prompt":"what is 2 + 3"}'; echo

echo "# a run that does not wait: {task_id, task_run_id}; poll it until is_done"
ANSWER=$(curl -sf "$G/api/runs" -H "$J" -d '{"prompt":"later please","wait_for_completion":false}')
echo "$ANSWER"
TASK_RUN_ID=$(printf '%s' "$ANSWER" | pick '["task_run_id"]')
for _ in $(seq 100); do                            # at most about 20 s
  TASK=$(curl -sf "$G/api/runs/$TASK_RUN_ID")
  [ "$(printf '%s' "$TASK" | pick '["is_done"]')" = True ] && break
  sleep 0.2
done
echo "$TASK"
[ "$(printf '%s' "$TASK" | pick '["is_done"]')" = True ] || { echo "task $TASK_RUN_ID never finished" >&2; exit 1; }

echo "# structured output: result is an object that fits json_schema"
curl -sf "$G/api/runs" -H "$J" -d '{"prompt":"a city","response_format":"json",
     "json_schema":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}'; echo

echo "# any Draft-7 schema: \$defs/\$ref as pydantic writes them, and answers that are not objects"
curl -sf "$G/api/runs" -H "$J" -d '{"prompt":"a city","json_schema":{"$defs":{"City":{"type":"object",
     "properties":{"name":{"type":"string"}},"required":["name"]}},"type":"object",
     "properties":{"best":{"type":"string"},"others":{"type":"array","items":{"$ref":"#/$defs/City"}}}}}'; echo
curl -sf "$G/api/runs" -H "$J" -d '{"prompt":"some words","json_schema":{"type":"array","items":{"type":"string"}}}'; echo

echo "# tasks: every run above made one; run the first again with another prompt, then list its runs"
TASK_ID=$(curl -sf "$G/api/tasks" | pick '["tasks"][-1]["id"]')
curl -sf "$G/api/tasks/$TASK_ID"; echo
curl -sf "$G/api/tasks/$TASK_ID/runs" -H "$J" -d '{"prompt":"once more"}'; echo
curl -sf "$G/api/tasks/$TASK_ID/runs"; echo

echo "# a bad request: 422"
code=$(curl -s -o /dev/null -w '%{http_code}' "$G/api/runs" -H "$J" -d '{"prompt":42}')
[ "$code" = 422 ] || { echo "expected 422, got $code" >&2; exit 1; }
echo "$code"
