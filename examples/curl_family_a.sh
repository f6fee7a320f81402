#!/usr/bin/env bash
# Family A (Operativus Agent Manager, /api/agents/...) through the HTTP gateway, with curl.
#
#   scripts/dev serve                           # in another terminal
#   examples/curl_family_a.sh                   # AGENTRUN_HTTP=http://HOST:PORT to point elsewhere
#
# Needs curl and python3 (to take ids from the JSON answers). Errors are application/problem+json.
# tests/test_examples.py runs this file against a real server.
set -euo pipefail
G=${AGENTRUN_HTTP:-http://127.0.0.1:8080}
J='Content-Type: application/json'
pick() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }   # pick '["a"]': a field of JSON on stdin

echo "# the agents"
curl -sf "$G/api/agents"; echo

echo "# a synchronous run: RunResponse"
ANSWER=$(curl -sf "$G/api/agents/echo/runs" -H "$J" -d '{"message":"hello there"}')
echo "$ANSWER"
OTHER=$(printf '%s' "$ANSWER" | pick '["runId"]')

echo "# a run streamed as SSE: START, REASONING_DELTA, CONTENT_DELTA..., STOP with the follow-ups"
curl -sfN "$G/api/agents/echo/runs/stream" -H "$J" -d '{"message":"hi","generateFollowups":true}'

echo "# a background run: {runId, status: QUEUED}; then its status, alone and with another run's"
ANSWER=$(curl -sf "$G/api/agents/slow/runs/background" -H "$J" -d '{"message":"tokens=5 delay_ms=100"}')
echo "$ANSWER"
RUN=$(printf '%s' "$ANSWER" | pick '["runId"]')
curl -sf "$G/api/agents/slow/runs/$RUN/status"; echo
curl -sf "$G/api/agents/slow/runs/status?runIds=$RUN,$OTHER,no-such-run"; echo   # missing ids omitted

echo "# human in the loop: status PAUSED + metadata.requiredAction; continue with APPROVE"
ANSWER=$(curl -sf "$G/api/agents/approval/runs" -H "$J" -d '{"message":"email the team"}')
echo "$ANSWER"
RUN=$(printf '%s' "$ANSWER" | pick '["runId"]')
curl -sf "$G/api/agents/approval/runs/$RUN/continue" -H "$J" -d '{"action":"APPROVE"}'; echo

echo "# cancel a run: 204, and its status says CANCELLED"
RUN=$(curl -sf "$G/api/agents/slow/runs/background" -H "$J" -d '{"message":"tokens=100 delay_ms=100"}' \
      | pick '["runId"]')
code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$G/api/agents/slow/runs/$RUN")
[ "$code" = 204 ] || { echo "DELETE: expected 204, got $code" >&2; exit 1; }
echo "DELETE $RUN: $code"
curl -sf "$G/api/agents/slow/runs/$RUN/status"; echo

echo "# a dropped stream: POST again with the id of the last frame received (<run_id>:<seq>): the same run goes on"
RUN=$(curl -sf "$G/api/agents/echo/runs" -H "$J" -d '{"message":"one two three","sessionId":"curl-session"}' \
      | pick '["runId"]')
curl -sfN "$G/api/agents/echo/runs/stream" -H "$J" -H "Last-Event-ID: $RUN:3" -d '{"message":"one two three"}'

echo "# sessions: a Spring page of them, one with its messages, its runs; DELETE drops its finished runs"
curl -sf "$G/api/sessions?size=5"; echo
curl -sf "$G/api/sessions/curl-session"; echo
curl -sf "$G/api/sessions/curl-session/runs"; echo
code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$G/api/sessions/curl-session")
[ "$code" = 204 ] || { echo "DELETE session: expected 204, got $code" >&2; exit 1; }

echo "# EventSource cannot send headers: a single-use token for one run's stream, as ?token="
TOKEN=$(curl -sf -X POST "$G/api/v1/runs/$OTHER/sse-token" | pick '["token"]')
curl -sfN "$G/api/v1/runs/$OTHER/events?token=$TOKEN"
