"""The layering holds where it matters at run time: a gateway process loads nothing of the server
and none of its database or agent libraries, and the import contracts in pyproject.toml hold."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("server", "sqlalchemy", "sqlmodel", "asyncpg", "aiosqlite", "pydantic_ai")

PROBE = """
import json, sys
from gateway.app import create_app
from gateway.families import all_families
from gateway.settings import GatewaySettings
create_app(GatewaySettings(), all_families())
print(json.dumps(sorted(sys.modules)))
"""


def test_the_gateway_app_loads_no_server_database_or_agent_module() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    loaded = json.loads(out)
    heavy = [m for m in loaded if m.split(".")[0] in HEAVY]
    assert heavy == [], heavy
    assert "gateway.families.a" in loaded  # the probe did build the families


def test_the_import_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
