#!/usr/bin/env bash
# Installs what kpipe's build, tests and demo need beyond Go, when missing:
# a Java runtime (17+) and Maven, from Debian's packages, to fetch and run the
# Apache Kafka broker, and OpenSSL, to make the test broker's certificates;
# Python 3 with venv, for the pyarrow interop test.
set -euo pipefail
missing=()
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
command -v openssl >/dev/null 2>&1 || missing+=(openssl) # the test broker's CA and certificates
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps.sh: installing ${missing[*]}" >&2
  if [ "$(id -u)" != 0 ]; then
    echo "deps.sh: need root for apt-get; run: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
