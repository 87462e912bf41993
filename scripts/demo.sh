#!/usr/bin/env bash
# The kpipe demo: start a local broker, produce a few thousand records with
# keys, headers and spread timestamps, back them up, restore one time window
# to a new topic, and print what happened. STORAGE=s3 keeps the backup in a
# local S3 server (scripts/s3.sh), encrypted at rest, instead of a folder.
set -euo pipefail
cd "$(dirname "$0")/.."
export KAFKA_PORT=${KAFKA_PORT:-9092}
STORAGE=${STORAGE:-fs}
say() { printf '\n== %s\n' "$*"; }
case $STORAGE in fs | s3) ;; *)
	echo "demo.sh: STORAGE=$STORAGE: use fs or s3" >&2
	exit 2
	;;
esac

say "starting Kafka (scripts/kafka.sh up)"
BOOT=$(scripts/kafka.sh up)
RUN=$(date +%Y%m%d-%H%M%S)
TOPIC="demo-orders-$RUN"
WORK=.kpipe/demo
mkdir -p "$WORK"

say "producing 5000 records to $TOPIC (4 partitions, timestamps over the last hour)"
go run ./internal/demo seed --bootstrap "$BOOT" --topic "$TOPIC" --partitions 4 --records 5000 > "$WORK/seed.json"
cat "$WORK/seed.json"
read -r START END IN < <(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["window_start"], d["window_end"], d["records_in_window"])' "$WORK/seed.json")

FILE=pipelines.example.hcl
STORE=(--path .kpipe/backups)
if [[ $STORAGE == s3 ]]; then
	say "starting the S3 server (scripts/s3.sh up); a key for encryption at rest in $WORK/key"
	S3=$(scripts/s3.sh up)
	export AWS_ACCESS_KEY_ID=${S3_ACCESS_KEY:-kpipe} AWS_SECRET_ACCESS_KEY=${S3_SECRET_KEY:-kpipe-secret}
	export KPIPE_S3_ENDPOINT=$S3 KPIPE_S3_PATH="s3://${S3_BUCKET:-kpipe}/demo" KPIPE_KEY_FILE="$WORK/key"
	[[ -s $WORK/key ]] || python3 -c 'import secrets; print(secrets.token_hex(32))' >"$WORK/key"
	FILE=pipelines.s3.example.hcl
	STORE=(--path "$KPIPE_S3_PATH" --s3-endpoint "$S3" --s3-force-path-style --encryption-key-file "$WORK/key")
fi

say "kpipe run $FILE: back up, then restore the window [$START, $END] to $TOPIC-pitr"
KPIPE_BOOTSTRAP=$BOOT KPIPE_TOPIC=$TOPIC KPIPE_BACKUP_ID="demo-$RUN" KPIPE_WINDOW_START=$START KPIPE_WINDOW_END=$END \
  bin/kpipe run "$FILE" --format json --log-level warn > "$WORK/run.json"

say "kpipe describe: what the backup holds, and the time range to pick a window from"
bin/kpipe describe "${STORE[@]}" --backup-id "demo-$RUN" --log-level warn

say "kpipe validate --deep: every segment read back, checksums and records against the index"
bin/kpipe validate "${STORE[@]}" --backup-id "demo-$RUN" --deep --progress off --log-level warn

say "the same restore with the restore verb, to $TOPIC-verb"
bin/kpipe restore "${STORE[@]}" --backup-id "demo-$RUN" --bootstrap-servers "$BOOT" \
  --time-window-start "$START" --time-window-end "$END" --topic-mapping "$TOPIC=$TOPIC-verb" --log-level warn

PITR=$(go run ./internal/demo count --bootstrap "$BOOT" --topic "$TOPIC-pitr")
VERB=$(go run ./internal/demo count --bootstrap "$BOOT" --topic "$TOPIC-verb")
python3 - "$WORK/run.json" "$IN" "$PITR" "$VERB" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))["pipelines"]
want, pitr, verb = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
backup = next(p for p in run if p["pipeline"] == "backup")
restore = next(p for p in run if p["pipeline"] == "pitr-restore")
m = {k: v for p in restore["plugins"] for k, v in (p.get("metrics") or {}).items()}
skipped = m.get("records_pruned", 0) + m.get("records_dropped", 0)
segs = next(p for p in backup["plugins"] if p["role"] == "sink")["metrics"]
print()
print("== what happened")
where = "in S3, encrypted" if "s3_requests" in segs else "on disk"
print(f"backed up:                 {backup['records_out']} records in {segs['segments_written']} segments ({segs['bytes_written']} bytes {where})")
print(f"restored (time window):    {restore['records_out']} records to the -pitr topic, which now holds {pitr}")
print(f"skipped outside window:    {skipped} ({m.get('segments_pruned', 0)} of {segs['segments_written']} segments and {m.get('batches_pruned', 0)} record batches skipped unread, the rest cut from the batches that straddle the window)")
print(f"expected in window:        {want}; the restore verb restored {verb}")
ok = restore["records_out"] == want == pitr == verb and backup["records_out"] == restore["records_out"] + skipped
print("result:                    " + ("OK" if ok else "MISMATCH"))
sys.exit(0 if ok else 1)
PY
echo
echo "The broker keeps running on $BOOT; stop it with: make kafka-down"
if [[ $STORAGE == s3 ]]; then echo "The S3 server keeps running on $S3; stop it with: make s3-down"; fi
