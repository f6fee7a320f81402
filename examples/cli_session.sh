#!/usr/bin/env bash
# The five-command session with the `agentrun` CLI, against a running server.
#
#   scripts/dev serve                                   # in another terminal
#   PATH=$PWD/.venv/bin:$PATH examples/cli_session.sh   # AGENTRUN_SERVER=HOST:PORT to point elsewhere
#
# Exit codes of `agentrun run`/`approve`: 0 COMPLETED, 1 FAILED or CANCELLED, 3 PAUSED, 4 server error.
# tests/test_examples.py runs this file against a real server.
set -euo pipefail

# 1. a synchronous run: prints the run (id, number, state) and its output
agentrun run echo "hello"

# 2. a run shown live: reasoning, the tool call and its result, the answer
agentrun stream tools "what is 6*7?"

# 3. a run that pauses for approval. It exits 3 (PAUSED), which is what we expect here, so the
#    exit code is checked instead of letting `set -e` stop the script. --json prints the run as
#    ProtoJSON; its "id" is the run id.
rc=0
PAUSED=$(agentrun run approval "send the report" --json) || rc=$?
if [ "$rc" -ne 3 ]; then
  echo "expected the approval run to pause (exit 3), got exit $rc" >&2
  exit 1
fi
RUN=$(printf '%s' "$PAUSED" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
echo "paused run: $RUN"

# 4. approve the tool call it waits for; waits for the run and exits 0 once it is COMPLETED
agentrun approve "$RUN"

# 5. the last five runs, newest first
agentrun list --limit 5
