# kpipe pipelines: back up a topic, then restore one time window of it (PITR)
# under a new topic name. Run against the local broker (`make kafka-up`):
#
#   kpipe run pipelines.example.hcl                        # both, in order
#   kpipe run pipelines.example.hcl --pipeline backup      # only the backup
#
# The window and names come from the environment, with defaults, so that the
# demo (scripts/demo.sh) can point them at the data it just produced:
#   KPIPE_BOOTSTRAP      broker                           (127.0.0.1:9092)
#   KPIPE_TOPIC          topic to back up                 (demo-orders)
#   KPIPE_BACKUP_ID      backup id                        (example)
#   KPIPE_WINDOW_START   window start, epoch milliseconds (-1: open)
#   KPIPE_WINDOW_END     window end, epoch milliseconds   (-1: open)
# Both window bounds are inclusive: a record is restored when
# start <= timestamp <= end.

state_dir  = ".kpipe/state"   # checkpoints
plugin_dir = "bin/plugins"    # kpipe-plugin-* binaries (`make build`)

locals {
  bootstrap    = env("KPIPE_BOOTSTRAP", "127.0.0.1:9092")
  topic        = env("KPIPE_TOPIC", "demo-orders")
  backup_id    = env("KPIPE_BACKUP_ID", "example")
  backups      = ".kpipe/backups"
  window_start = tonumber(env("KPIPE_WINDOW_START", "-1"))
  window_end   = tonumber(env("KPIPE_WINDOW_END", "-1"))
}

# Back up every partition of the topic up to its current end. Running it
# again continues after what the backup already holds.
pipeline "backup" {
  source "kafka" {
    bootstrap_servers = [local.bootstrap]
    topics            = [local.topic]       # names or globs, e.g. "orders-*"
    isolation_level   = "read_committed"    # committed transactional data only
  }
  sink "fs" {
    path              = local.backups
    backup_id         = local.backup_id
    compression       = "zstd"              # or lz4, none
    segment_max_bytes = 67108864          # a segment is committed at this size
    segment_max_records = 500             # ... or at this many records (small here, so that
                                          # the demo shows segments skipped by the window)
  }
}

# Restore the records of one time window to "<topic>-pitr".
pipeline "pitr-restore" {
  source "fs" {
    path              = local.backups
    backup_id         = local.backup_id
    # Only the records of the window are read: segments that cannot hold
    # one are skipped unread, those that straddle a bound are cut.
    time_window_start = local.window_start
    time_window_end   = local.window_end
  }
  transform "remap" {
    topic_mapping = { (local.topic) = "${local.topic}-pitr" }
  }
  sink "kafka" {
    bootstrap_servers = [local.bootstrap]
  }
}
