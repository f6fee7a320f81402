"""Limits the server enforces and the gateway must state (in /openapi.json and its own checks) the
same way: one table, read by server/validation*.py and gateway/rules.py."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

# Longest string, by field name in any request message: the database column's length where one
# stores the field (server/store/tables.py), else a bound documented in the proto.
MAX_CHARS: Final[Mapping[str, int]] = {
    "agent_id": 64,
    "org_id": 128,
    "user_id": 128,
    "session_id": 128,
    "idempotency_key": 256,
    "webhook_url": 2048,
    "run_id": 64,
    "run_ids": 64,
    "delivery_id": 40,
    "tool_call_id": 128,
    "reason": 2048,
    "page_token": 128,
    "message": 1_000_000,  # RunInput.message
    "system_prompt": 100_000,
    "model": 128,
    "provider": 64,
    "type": 255,  # Media.type, a MIME type
    "data": 4_000_000,  # Media.data, base64 content or a URL
}
# Any other string field of a request.
DEFAULT_MAX_CHARS: Final = 1024
# A Struct (metadata, json_schema) or Value field: its encoded size and how deeply it nests.
MAX_STRUCT_BYTES: Final = 64 * 1024
MAX_STRUCT_DEPTH: Final = 20
MAX_MEDIA_ITEMS: Final = 16
MAX_BATCH_IDS: Final = 100
MAX_PAGE_SIZE: Final = 1000
# The deepest offset ListRuns pages to (page-number clients); past it a page is empty.
MAX_SKIP: Final = 100_000
MAX_TIMEOUT_S: Final = 7 * 24 * 3600
# Event seqs, and the offsets in page tokens: INTEGER columns on PostgreSQL.
MAX_INTEGER: Final = 2**31 - 1
# Run numbers (GetRun's other name for a run, family C's run ids, ListRuns' cursor): BIGINT since
# migration 8, SQLite's 64-bit rowid.
MAX_RUN_NUMBER: Final = 2**63 - 1
