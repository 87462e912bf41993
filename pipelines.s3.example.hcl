# kpipe pipelines with backups in S3: back up a topic into a bucket,
# encrypted at rest, then restore one time window of it (PITR) under a new
# topic name. Run against the local broker and S3 server (`make kafka-up`,
# `make s3-up`), with the server's keys in the standard AWS variables:
#
#   AWS_ACCESS_KEY_ID=kpipe AWS_SECRET_ACCESS_KEY=kpipe-secret \
#     kpipe run pipelines.s3.example.hcl
#
# Besides the variables of pipelines.example.hcl:
#   KPIPE_S3_PATH        bucket and prefix                (s3://kpipe/example)
#   KPIPE_S3_ENDPOINT    the S3 server                    (http://127.0.0.1:9000)
#   KPIPE_KEY_FILE       key of encryption at rest, 64 hex digits
#                        (empty: no encryption; make one: openssl rand -hex 32)

state_dir  = ".kpipe/state"
plugin_dir = "bin/plugins"

locals {
  bootstrap    = env("KPIPE_BOOTSTRAP", "127.0.0.1:9092")
  topic        = env("KPIPE_TOPIC", "demo-orders")
  backup_id    = env("KPIPE_BACKUP_ID", "example")
  path         = env("KPIPE_S3_PATH", "s3://kpipe/example")
  endpoint     = env("KPIPE_S3_ENDPOINT", "http://127.0.0.1:9000")
  key_file     = env("KPIPE_KEY_FILE", "")
  window_start = tonumber(env("KPIPE_WINDOW_START", "-1"))
  window_end   = tonumber(env("KPIPE_WINDOW_END", "-1"))
}

pipeline "backup" {
  source "kafka" {
    bootstrap_servers = [local.bootstrap]
    topics            = [local.topic]
    isolation_level   = "read_committed"
  }
  sink "s3" {
    path                = local.path          # or bucket = "..." and prefix = "..."
    endpoint            = local.endpoint      # leave out for AWS
    force_path_style    = true                # as most S3-compatible servers want
    backup_id           = local.backup_id
    encryption_key_file = local.key_file      # AES-256-GCM per record batch
    max_storage_outage  = "5m"                # retry this long while the server is away
    segment_max_records = 500
  }
}

pipeline "pitr-restore" {
  source "s3" {
    path                = local.path
    endpoint            = local.endpoint
    force_path_style    = true
    backup_id           = local.backup_id
    encryption_key_file = local.key_file      # the backup's key, or the restore fails before writing
    time_window_start   = local.window_start
    time_window_end     = local.window_end
  }
  transform "remap" {
    topic_mapping = { (local.topic) = "${local.topic}-pitr" }
  }
  sink "kafka" {
    bootstrap_servers = [local.bootstrap]
  }
}
