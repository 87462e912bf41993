#!/usr/bin/env bash
# s3.sh — run a real S3-compatible object store (the MinIO server) on
# 127.0.0.1 for kpipe's tests, benchmark and demo.
#
# No Docker and no download of a release binary: the server is built once
# from the Go module proxy (a pinned version) into the cache.
#
# Usage:
#   scripts/s3.sh up        build if needed, start, wait until ready, create
#                           the bucket; prints the endpoint URL on stdout
#   scripts/s3.sh down      stop the server of S3_PORT (S3_WIPE=1 also deletes
#                           its data)
#   scripts/s3.sh status    prints "running" (exit 0) or "stopped" (exit 1)
#   scripts/s3.sh bin       build if needed; prints the server binary's path
#
# Environment:
#   S3_PORT          API port (default 9000)
#   S3_ACCESS_KEY    access key (default kpipe)
#   S3_SECRET_KEY    secret key (default kpipe-secret)
#   S3_BUCKET        bucket created at "up" (default kpipe)
#   S3_REGION        region the server answers for (default us-east-1)
#   KPIPE_CACHE      cache folder (default <repo>/.cache)
#   S3_STATE_DIR     data and logs (default $KPIPE_CACHE/s3-run-$S3_PORT)
#   S3_START_TIMEOUT seconds to wait for the server (default 60)
#
# All messages go to stderr, prefixed "s3.sh:"; stdout carries only results.
set -euo pipefail

# The server's version: a commit of github.com/minio/minio, as the Go module
# proxy names it.
readonly MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
CACHE=${KPIPE_CACHE:-$REPO/.cache}
BIN_DIR="$CACHE/minio-$MINIO_VERSION"
BIN="$BIN_DIR/minio"

PORT=${S3_PORT:-9000}
ACCESS_KEY=${S3_ACCESS_KEY:-kpipe}
SECRET_KEY=${S3_SECRET_KEY:-kpipe-secret}
BUCKET=${S3_BUCKET:-kpipe}
REGION=${S3_REGION:-us-east-1}
START_TIMEOUT=${S3_START_TIMEOUT:-60}
STATE=${S3_STATE_DIR:-$CACHE/s3-run-$PORT}
PIDFILE="$STATE/minio.pid"
OUTFILE="$STATE/minio.out"
ENDPOINT="http://127.0.0.1:$PORT"

log() { printf 's3.sh: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

[[ $PORT =~ ^[0-9]+$ ]] && ((PORT >= 1 && PORT <= 65534)) || die "S3_PORT must be a TCP port number, got '$PORT'"
((${#ACCESS_KEY} >= 3)) || die "S3_ACCESS_KEY must have at least 3 characters"
((${#SECRET_KEY} >= 8)) || die "S3_SECRET_KEY must have at least 8 characters"

cmd_bin() {
	if [[ ! -x $BIN ]]; then
		command -v go >/dev/null || die "go not found: it builds the S3 server"
		mkdir -p "$CACHE"
		[[ -e $CACHE/.gitignore ]] || printf '# Created by scripts/s3.sh\n*\n' >"$CACHE/.gitignore"
		local lockfd
		exec {lockfd}>"$CACHE/.minio-build.lock"
		flock -w 1200 "$lockfd" || die "timed out waiting for another build ($CACHE/.minio-build.lock)"
		if [[ ! -x $BIN ]]; then
			local t0=$SECONDS tmp="$BIN_DIR.tmp.$$"
			log "building the MinIO server $MINIO_VERSION from the Go module proxy into $BIN_DIR (one-time, a few minutes) ..."
			rm -rf "$tmp"
			CGO_ENABLED=0 GOBIN="$tmp" GOFLAGS=-mod=mod go install "github.com/minio/minio@$MINIO_VERSION" >&2 ||
				die "could not build the MinIO server (is the Go module proxy reachable?)"
			rm -rf "$BIN_DIR"
			mv "$tmp" "$BIN_DIR"
			log "built in $((SECONDS - t0))s"
		fi
		exec {lockfd}>&-
	fi
	echo "$BIN"
}

pid_of_server() {
	[[ -f $PIDFILE ]] || return 1
	local pid
	pid=$(tr -dc '0-9' <"$PIDFILE")
	[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'minio' || return 1
	echo "$pid"
}

ready() { curl -fs -o /dev/null "$ENDPOINT/minio/health/ready"; }

# s3curl METHOD PATH: a signed request to the server.
s3curl() {
	curl -fsS -X "$1" --aws-sigv4 "aws:amz:$REGION:s3" --user "$ACCESS_KEY:$SECRET_KEY" "$ENDPOINT$2"
}

cmd_up() {
	cmd_bin >/dev/null
	# One "up" per state dir at a time: two would start two servers on one
	# port (the server binds it with SO_REUSEPORT) over the same data, each
	# with its own locks. The server does not inherit the lock.
	mkdir -p "$STATE"
	local lockfd
	exec {lockfd}>"$STATE/.lock"
	flock -w $((START_TIMEOUT + 60)) "$lockfd" || die "timed out waiting for another s3.sh on $STATE"
	if ! pid_of_server >/dev/null; then
		(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && die "port $PORT is taken by another program; set S3_PORT"
		mkdir -p "$STATE/data"
		log "starting the S3 server on $ENDPOINT (data in $STATE/data)"
		MINIO_ROOT_USER=$ACCESS_KEY MINIO_ROOT_PASSWORD=$SECRET_KEY MINIO_REGION=$REGION \
			MINIO_BROWSER=off MINIO_UPDATE=off \
			setsid "$BIN" server --quiet --address "127.0.0.1:$PORT" "$STATE/data" >"$OUTFILE" 2>&1 </dev/null {lockfd}>&- &
		echo $! >"$PIDFILE"
	fi
	local deadline=$((SECONDS + START_TIMEOUT))
	until ready; do
		pid_of_server >/dev/null || die "the S3 server exited; its output: $(tail -n 20 "$OUTFILE" 2>/dev/null)"
		((SECONDS < deadline)) || die "the S3 server did not get ready within ${START_TIMEOUT}s; see $OUTFILE"
		sleep 0.2
	done
	# Ready may come a moment before the server serves buckets (503): the
	# bucket is tried until the same deadline.
	until s3curl HEAD "/$BUCKET" >/dev/null 2>&1 || s3curl PUT "/$BUCKET" >/dev/null 2>&1; do
		((SECONDS < deadline)) || die "could not create bucket $BUCKET: $(s3curl PUT "/$BUCKET" 2>&1 >/dev/null)"
		sleep 0.2
	done
	echo "$ENDPOINT"
}

cmd_down() {
	local pid
	if pid=$(pid_of_server); then
		kill "$pid"
		for _ in $(seq 100); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -9 "$pid" 2>/dev/null || true
		log "stopped the S3 server on $ENDPOINT"
	fi
	rm -f "$PIDFILE"
	if [[ ${S3_WIPE:-} == 1 ]]; then rm -rf "$STATE"; fi
}

case ${1:-} in
up) cmd_up ;;
down) cmd_down ;;
status) if pid_of_server >/dev/null; then echo running; else
	echo stopped
	exit 1
fi ;;
bin) cmd_bin ;;
*) die "usage: scripts/s3.sh up|down|status|bin" ;;
esac
