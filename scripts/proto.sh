#!/usr/bin/env bash
# Regenerates the Go code of the plugin protocol. Installs what it needs:
# protoc from Debian's protobuf-compiler package, and the two Go generators,
# pinned, into bin/tools.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v protoc >/dev/null 2>&1; then
  echo "proto.sh: installing protoc (apt-get install protobuf-compiler)" >&2
  apt-get update -qq && apt-get install -y -qq protobuf-compiler
fi
export GOBIN="$PWD/bin/tools"
[ -x "$GOBIN/protoc-gen-go" ] || go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
[ -x "$GOBIN/protoc-gen-go-grpc" ] || go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
PATH="$GOBIN:$PATH" protoc -I sdk/proto \
  --go_out=sdk/proto --go_opt=paths=source_relative \
  --go-grpc_out=sdk/proto --go-grpc_opt=paths=source_relative \
  sdk/proto/kpipe/v2/plugin.proto
