// Package chaos holds kpipe's chaos harness: tests that kill, corrupt and
// restart pipelines and then check that what was promised still holds.
//
// TestBackupSurvivesSIGKILL kills the backup process with SIGKILL at random
// moments, restarts it each time, and proves that the finished backup holds
// every source offset exactly once, byte for byte. The random seed is
// logged; set KPIPE_CHAOS_SEED to replay a run.
package chaos
