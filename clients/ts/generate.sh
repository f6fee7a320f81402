#!/usr/bin/env bash
# Regenerate gen/ (protobuf-es messages + Connect service descriptors, JavaScript with .d.ts).
#   clients/ts/generate.sh            write clients/ts/gen/
#   clients/ts/generate.sh DIR        write DIR/gen/ instead (the staleness test compares the two)
# Needs the project's venv (grpcio-tools, googleapis-common-protos, buf-bin) first on PATH, or
# PYTHON/BUF pointing at them, and node + npm (runs `npm ci` when node_modules is missing).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT_BASE=$(mkdir -p "${1:-$HERE}" && cd "${1:-$HERE}" && pwd)
PY=${PYTHON:-python}
BUF=${BUF:-buf}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The descriptor image, built as scripts/genproto.py builds it (the Buf Schema Registry is out of
# reach, so buf cannot resolve googleapis itself), plus google/rpc/error_details.proto so clients
# can read ErrorInfo / BadRequest from error details.
googleapis=$("$PY" -c 'import google.api, pathlib; print(pathlib.Path(next(iter(google.api.__path__))).parent.parent)')
wkt=$("$PY" -c 'import grpc_tools, pathlib; print(pathlib.Path(grpc_tools.__file__).parent / "_proto")')
cd "$ROOT/proto"
mapfile -t protos < <(find . -name '*.proto' | sed 's|^\./||' | LC_ALL=C sort)
"$PY" -m grpc_tools.protoc -I. -I"$googleapis" -I"$wkt" --include_imports --include_source_info \
  --descriptor_set_out="$work/image.binpb" "${protos[@]}" google/rpc/error_details.proto

cd "$HERE"
if [ ! -x node_modules/.bin/protoc-gen-es ]; then
  npm ci --no-audit --no-fund >&2
fi
# Well-known types come from @bufbuild/protobuf/wkt, so google/protobuf is not generated.
"$BUF" generate "$work/image.binpb" --template buf.gen.yaml --output "$OUT_BASE" \
  --exclude-path google/protobuf
