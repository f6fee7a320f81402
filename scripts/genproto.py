"""Regenerate gen/ from proto/ and build the descriptor image buf lints.

Usage: python scripts/genproto.py [--out DIR] [--image PATH]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import google.api
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
GEN_DIR = ROOT / "gen"


def _googleapis_include() -> str:
    # google/api/*.proto ship inside googleapis-common-protos; its package dir is <site>/google/api.
    return str(Path(next(iter(google.api.__path__))).parent.parent)


def _grpc_include() -> str:
    # grpc_tools bundles google/protobuf/*.proto.
    import grpc_tools

    return str(Path(grpc_tools.__file__).parent / "_proto")


def proto_files() -> list[str]:
    return sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))


def _protoc(args: list[str]) -> None:
    base = ["protoc", f"-I{PROTO_DIR}", f"-I{_googleapis_include()}", f"-I{_grpc_include()}"]
    code = protoc.main(base + args + proto_files())
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")


def generate(out: Path) -> None:
    """Write *_pb2.py, *_pb2.pyi and *_pb2_grpc.py for every file under proto/ into `out`."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    _protoc([f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}"])


def build_image(path: Path) -> None:
    """Write a descriptor image with imports and source info, the input `buf lint` takes offline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _protoc(["--include_imports", "--include_source_info", f"--descriptor_set_out={path}"])


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=GEN_DIR)
    parser.add_argument("--image", type=Path, default=None)
    args = parser.parse_args(argv)
    generate(args.out)
    if args.image is not None:
        build_image(args.image)


if __name__ == "__main__":
    main(sys.argv[1:])
