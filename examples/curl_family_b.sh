#!/usr/bin/env bash
# Family B (PraisonAI async jobs, /api/v1/runs...) through the HTTP gateway, with curl. `recipe_name`
# names the agent (else `agentrun serve --gateway-family-b-agent`, default echo).
#
#   scripts/dev serve                           # in another terminal
#   examples/curl_family_b.sh                   # AGENTRUN_HTTP=http://HOST:PORT to point elsewhere
#
# Needs curl and python3 (to take ids from the JSON answers). Errors are {"detail": ...}.
# tests/test_examples.py runs this file against a real server.
set -euo pipefail
G=${AGENTRUN_HTTP:-http://127.0.0.1:8080}
J='Content-Type: application/json'
pick() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }   # pick '["a"]': a field of JSON on stdin
# expect CODE CURL-ARGS...: the request's status code must be CODE (the body is not shown)
expect() {
  local want=$1 code
  shift
  code=$(curl -s -o /dev/null -w '%{http_code}' "$@")
  [ "$code" = "$want" ] || { echo "$*: expected $want, got $code" >&2; exit 1; }
  echo "$code  $*"
}

echo "# submit a job: 202 with Location and Retry-After; the same Idempotency-Key again: the same job"
KEY="job-$$-$(date +%s)"
JOB_BODY='{"prompt":"tokens=20 delay_ms=100","recipe_name":"slow"}'
curl -sfi "$G/api/v1/runs" -H "$J" -H "Idempotency-Key: $KEY" -d "$JOB_BODY"; echo
JOB=$(curl -sf "$G/api/v1/runs" -H "$J" -H "Idempotency-Key: $KEY" -d "$JOB_BODY" | pick '["job_id"]')
echo "JOB=$JOB"

echo "# its status (progress, retry_after); its result is 409 until the job ends"
curl -sf "$G/api/v1/runs/$JOB"; echo
expect 409 "$G/api/v1/runs/$JOB/result"

echo "# its stream: event status/progress/heartbeat/result, complete, then data: [DONE]"
curl -sfN "$G/api/v1/runs/$JOB/stream"

echo "# the result, the finished jobs, cancel (409 once finished) and delete (204)"
curl -sf "$G/api/v1/runs/$JOB/result"; echo
curl -sf "$G/api/v1/runs?status=succeeded&page=1&page_size=20"; echo
expect 409 -X POST "$G/api/v1/runs/$JOB/cancel"
expect 204 -X DELETE "$G/api/v1/runs/$JOB"

echo "# a job not finished yet: delete is 409, cancel it first"
JOB=$(curl -sf "$G/api/v1/runs" -H "$J" -d '{"prompt":"tokens=100 delay_ms=100","recipe_name":"slow"}' \
      | pick '["job_id"]')
expect 409 -X DELETE "$G/api/v1/runs/$JOB"
curl -sf -X POST "$G/api/v1/runs/$JOB/cancel"; echo
expect 204 -X DELETE "$G/api/v1/runs/$JOB"

echo "# the service"
curl -sf "$G/stats"; echo
curl -sf "$G/health"; echo
