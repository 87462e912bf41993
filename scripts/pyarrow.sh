#!/usr/bin/env bash
# Installs pyarrow (pinned) into a virtualenv under .cache, once, and prints
# the path of its python. The tests use it to prove that segments are plain
# Arrow IPC that another Arrow implementation (Arrow C++, under pyarrow)
# reads without kpipe.
set -euo pipefail
cd "$(dirname "$0")/.."
PYARROW_VERSION=26.0.1
VENV=.cache/pyarrow-$PYARROW_VERSION
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import pyarrow' 2>/dev/null; then
  echo "pyarrow.sh: installing pyarrow $PYARROW_VERSION into $VENV (one-time)" >&2
  rm -rf "$VENV"
  mkdir -p .cache
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "pyarrow==$PYARROW_VERSION" >&2
fi
echo "$PWD/$VENV/bin/python"
