"""The fault harness: agentrun servers killed with SIGKILL and restarted, PostgreSQL restarted and
frozen, streams cut and re-attached with their cursor, all under a stream of submissions; then
a check of the stored history through the API. See tests/faults/README.md.

    python -m tests.faults --quick                 # about 30 s; CI runs it (tests/test_faults.py)
    python -m tests.faults --seconds 120 --json faults.json
"""
