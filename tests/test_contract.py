"""The contract: gen/ matches proto/, buf STANDARD lint passes, every RPC is annotated."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

from agentrun.v1 import run_service_pb2
from google.api import annotations_pb2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import genproto  # noqa: E402


def _differences(left: Path, right: Path) -> list[str]:
    cmp = filecmp.dircmp(left, right, ignore=["__pycache__"])
    found = [*cmp.left_only, *cmp.right_only, *cmp.diff_files, *cmp.funny_files]
    for name, sub in cmp.subdirs.items():
        found += [f"{name}/{f}" for f in _differences(Path(sub.left), Path(sub.right))]
    return found


def test_gen_is_up_to_date(tmp_path: Path) -> None:
    genproto.generate(tmp_path / "gen")
    stale = _differences(ROOT / "gen", tmp_path / "gen")
    assert not stale, f"gen/ is stale, run `python scripts/genproto.py`: {stale}"


def test_buf_lint_passes(tmp_path: Path) -> None:
    image = tmp_path / "image.binpb"
    genproto.build_image(image)
    # buf-bin installs buf beside the interpreter; PATH is the fallback for a global one.
    beside = Path(sys.executable).with_name("buf")
    buf = str(beside) if beside.exists() else shutil.which("buf")
    assert buf, "the buf CLI (buf-bin) is not installed"
    result = subprocess.run(
        [buf, "lint", str(image), "--exclude-path", "google", "--config", str(ROOT / "buf.yaml")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rpc_has_an_http_annotation() -> None:
    service = run_service_pb2.DESCRIPTOR.services_by_name["RunService"]
    for method in service.methods:
        rule = method.GetOptions().Extensions[annotations_pb2.http]
        assert rule.WhichOneof("pattern"), f"{method.name} has no google.api.http annotation"
