// Package chaos holds kpipe's chaos harness: tests that kill, cut off and
// restart what a backup or a restore depends on, and then check that what
// was promised still holds.
//
// Every scenario produces a known data set (several partitions; null and
// empty keys, values and header values, repeated header keys, timestamps
// out of order), injects its faults, and then checks the backup with
// `kpipe validate --deep` (which must find it valid: the leftovers of a
// killed or failed run are not damage) and restores it to a new topic that
// is compared with the source record by record (key, value, headers,
// timestamp, order per partition), counting records lost and duplicated.
// The scenarios:
//
//   - TestBackupSurvivesSIGKILL, TestBackupOnS3SurvivesSIGKILL and
//     TestContinuousBackupSurvivesSIGKILL: SIGKILLs of a snapshot backup
//     (into a folder and into S3) and of a continuous one at random
//     moments, each followed by a restart;
//   - TestABrokerRestartMidBackup and TestABrokerRestartMidRestore: a
//     broker of the test's own stopped and started mid-run;
//   - TestBrokerOutages: a broker stopped under a continuous backup, for
//     22 seconds and for longer than --max-broker-outage;
//   - TestABackupRidesOutANetworkBlackHole: a TCP proxy in front of a
//     broker advertised at the proxy's address stops forwarding bytes,
//     without closing connections, then forwards again;
//   - TestABackupRidesOutAnS3Outage and TestAnS3OutageLongerThanTheBudgetFails:
//     the backup's own S3 server stopped and started mid-backup;
//   - TestAFullStoreFailsCleanlyAndTheNextRunCompletes: a store whose
//     quota runs out (testdata/quotafs, a storage plugin wrapping the fs
//     store with a byte quota), and TestAFullDiskFailsCleanlyAndTheNextRunCompletes,
//     the same on a small tmpfs when run as root.
//
// TestValidateCatchesCorruptionOnFS and TestValidateCatchesCorruptionOnS3
// (corruption_test.go) damage copies of a finished backup (flipped bytes,
// truncated segments, ...) and check that validate names each damage.
//
// KPIPE_CHAOS_SEED replays a run's random choices (each scenario logs the
// seed). KPIPE_CHAOS_LONG=1 is the long run (more kills, more data, longer
// outages); `make test` runs the short one. With KPIPE_CHAOS_REPORT=FILE
// the scenarios run are written to FILE as a Markdown table (scenario,
// faults injected, outcome, records lost, records duplicated, time to
// recover): `make chaos` runs the long version and writes REPORT.md.
package chaos
