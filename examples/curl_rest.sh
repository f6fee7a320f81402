#!/usr/bin/env bash
# The canonical REST mapping (/v1/..., ProtoJSON, one route per RPC) through the HTTP gateway, with
# curl. The full list of routes is in $G/openapi.json.
#
#   scripts/dev serve                           # in another terminal
#   examples/curl_rest.sh                       # AGENTRUN_HTTP=http://HOST:PORT to point elsewhere
#
# Needs curl and python3 (to take ids from the JSON answers). Errors are {"error": {code, status,
# message, details}}, the details being the gRPC status's.
# tests/test_examples.py runs this file against a real server.
set -euo pipefail
G=${AGENTRUN_HTTP:-http://127.0.0.1:8080}
J='Content-Type: application/json'
pick() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }   # pick '["a"]': a field of JSON on stdin

echo "# the agents, and one"
curl -sf "$G/v1/agents"; echo
curl -sf "$G/v1/agents/echo"; echo

echo "# a synchronous run (Run with wait): the COMPLETED run with its output"
ANSWER=$(curl -sf "$G/v1/agents/echo/runs" -H "$J" -d '{"input":{"message":"hi"},"wait":true}')
echo "$ANSWER"
RUN=$(printf '%s' "$ANSWER" | pick '["run"]["id"]')

echo "# a new run streamed (StreamRun): SSE frames with id: <seq>"
curl -sfN "$G/v1/agents/echo/runs:stream" -H "$J" -d '{"run":{"input":{"message":"hi"}}}'

echo "# re-attach to a run's stream after seq 3: only the events after it"
curl -sfN "$G/v1/runs/$RUN:stream" -H 'Last-Event-ID: 3'

echo "# a background run (no wait): QUEUED, with its id; get it, and several at once"
RUN=$(curl -sf "$G/v1/agents/slow/runs" -H "$J" -d '{"input":{"message":"tokens=50 delay_ms=100"}}' \
      | pick '["run"]["id"]')
curl -sf "$G/v1/runs/$RUN"; echo
curl -sf "$G/v1/runs:batchGet?run_ids=$RUN&run_ids=nope"; echo      # missingRunIds: ["nope"]

echo "# its stored events after seq 2; cancel it; delete it, and it is gone (404)"
curl -sf "$G/v1/runs/$RUN/events?after_seq=2"; echo
curl -sf -X POST "$G/v1/runs/$RUN:cancel" -H "$J" -d '{}'; echo
curl -sf -X DELETE "$G/v1/runs/$RUN"; echo
code=$(curl -s -o /dev/null -w '%{http_code}' "$G/v1/runs/$RUN")
[ "$code" = 404 ] || { echo "GET a deleted run: expected 404, got $code" >&2; exit 1; }
echo "GET $RUN: $code"

echo "# human in the loop: the run pauses with a pendingAction; approve it (Continue)"
RUN=$(curl -sf "$G/v1/agents/approval/runs" -H "$J" -d '{"input":{"message":"send the report"},"wait":true}' \
      | pick '["run"]["id"]')
curl -sf "$G/v1/runs/$RUN"; echo
curl -sf "$G/v1/runs/$RUN:continue" -H "$J" -d '{"decision":"DECISION_APPROVE","wait":true}'; echo

echo "# the last 5 runs, newest first"
curl -sf "$G/v1/runs?page_size=5"; echo
