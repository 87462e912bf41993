#!/usr/bin/env bash
# The kpipe demo: start a local broker, produce a few thousand records with
# keys, headers and spread timestamps, back them up, restore one time window
# to a new topic, and print what happened.
set -euo pipefail
cd "$(dirname "$0")/.."
export KAFKA_PORT=${KAFKA_PORT:-9092}
say() { printf '\n== %s\n' "$*"; }

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

say "kpipe run pipelines.example.hcl: back up, then restore the window [$START, $END] to $TOPIC-pitr"
KPIPE_BOOTSTRAP=$BOOT KPIPE_TOPIC=$TOPIC KPIPE_BACKUP_ID="demo-$RUN" KPIPE_WINDOW_START=$START KPIPE_WINDOW_END=$END \
  bin/kpipe run pipelines.example.hcl --format json --log-level warn > "$WORK/run.json"

say "the same restore with the restore verb, to $TOPIC-verb"
bin/kpipe restore --path .kpipe/backups --backup-id "demo-$RUN" --bootstrap-servers "$BOOT" \
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
print(f"backed up:                 {backup['records_out']} records in {segs['segments_written']} segments ({segs['bytes_written']} bytes on disk)")
print(f"restored (time window):    {restore['records_out']} records to the -pitr topic, which now holds {pitr}")
print(f"skipped outside window:    {skipped} ({m.get('segments_pruned', 0)} of {segs['segments_written']} segments and {m.get('batches_pruned', 0)} record batches skipped unread, the rest cut from the batches that straddle the window)")
print(f"expected in window:        {want}; the restore verb restored {verb}")
ok = restore["records_out"] == want == pitr == verb and backup["records_out"] == restore["records_out"] + skipped
print("result:                    " + ("OK" if ok else "MISMATCH"))
sys.exit(0 if ok else 1)
PY
echo
echo "The broker keeps running on $BOOT; stop it with: make kafka-down"
