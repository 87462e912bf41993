package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kpipe/kpipe/sdk"
)

// What describe and list read of a backup, without reading its segments:
// the state of its last run, and its topics' incarnations and partitions,
// each summed up from its manifest. The JSON of these types is what
// `kpipe describe --format json` prints; fields are only ever added.

// Instant is a moment as ISO-8601 (UTC, milliseconds) and as epoch
// milliseconds, the unit of time windows.
type Instant struct {
	ISO     string `json:"iso"`
	EpochMS int64  `json:"epoch_ms"`
}

// At returns the Instant of epoch milliseconds ms.
func At(ms int64) *Instant {
	return &Instant{ISO: time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z"), EpochMS: ms}
}

// Backup states, from the lease of its last run.
const (
	// StateComplete: the last run read its source to the end and let go.
	StateComplete = "complete"
	// StateStopped: the last run was stopped by a signal and let go; what
	// it committed is whole (a continuous backup ends this way).
	StateStopped = "stopped"
	// StateInProgress: a writer holds the backup and renews its lease.
	StateInProgress = "in_progress"
	// StateFailed: the last run ended without letting go (it failed, or
	// was killed); what it committed is whole, and a rerun continues it.
	StateFailed = "failed"
)

// RunState is the state of a backup's last run.
type RunState struct {
	State string `json:"state"`
	// Runs is how many runs wrote the backup (lease epochs).
	Runs    int64      `json:"runs"`
	Host    string     `json:"host,omitempty"`
	Pid     int        `json:"pid,omitempty"`
	Started time.Time  `json:"started"`
	Ended   *time.Time `json:"ended,omitempty"`
	// Renewed is when the run last said it was alive.
	Renewed time.Time `json:"renewed"`
}

// runState reads the state of the last run from the leases.
func runState(leases map[int64]Lease, alive func(pid int) bool) RunState {
	var last Lease
	var runs int64
	for _, l := range leases {
		runs = max(runs, l.Epoch)
		if l.Epoch > last.Epoch && !(l.Released && l.Outcome == OutcomeNotStarted) {
			last = l
		}
	}
	if last.Epoch == 0 {
		return RunState{State: StateFailed, Runs: runs}
	}
	rs := RunState{Runs: runs, Host: last.Host, Pid: last.Pid, Started: last.Since, Renewed: last.Renewed}
	host, _ := osHostname()
	switch {
	case last.Released:
		ended := last.Renewed
		rs.Ended = &ended
		rs.State = StateComplete
		if last.Outcome == OutcomeStopped {
			rs.State = StateStopped
		}
	case last.Host == host && !alive(last.Pid):
		rs.State = StateFailed
	case time.Now().Before(last.Renewed.Add(last.TTL)):
		rs.State = StateInProgress
	default:
		rs.State = StateFailed
	}
	return rs
}

// Description is a backup as `kpipe describe` shows it.
type Description struct {
	BackupID      string      `json:"backup_id"`
	FormatVersion int         `json:"format_version"`
	CreatedAt     time.Time   `json:"created_at"`
	ClusterID     string      `json:"cluster_id,omitempty"`
	Encryption    *Encryption `json:"encryption,omitempty"`
	LastRun       RunState    `json:"last_run"`
	// EarliestRecord and LatestRecord are the smallest and largest record
	// timestamps; absent for a backup without records.
	EarliestRecord *Instant   `json:"earliest_record,omitempty"`
	LatestRecord   *Instant   `json:"latest_record,omitempty"`
	LastCommit     *time.Time `json:"last_commit,omitempty"`
	Totals
	Topics         []TopicDescription `json:"topics"`
	ConsumerGroups *GroupsDescription `json:"consumer_groups,omitempty"`
}

// Totals sum up records and bytes.
type Totals struct {
	Records  int64 `json:"records"`
	Segments int64 `json:"segments"`
	// StoredBytes is what the segments take in the store (compressed, and
	// encrypted if they are); UncompressedBytes what their batches hold
	// decompressed (0 when unknown).
	StoredBytes       int64 `json:"stored_bytes"`
	UncompressedBytes int64 `json:"uncompressed_bytes"`
	Gaps              int64 `json:"gaps"`
}

func (t *Totals) add(o Totals) {
	t.Records += o.Records
	t.Segments += o.Segments
	t.StoredBytes += o.StoredBytes
	t.UncompressedBytes += o.UncompressedBytes
	t.Gaps += o.Gaps
}

// TopicDescription is a topic: its incarnations in the order they were
// backed up, the current one last.
type TopicDescription struct {
	Name string `json:"name"`
	// Partitions is how many the current incarnation has.
	Partitions     int32    `json:"partitions"`
	EarliestRecord *Instant `json:"earliest_record,omitempty"`
	LatestRecord   *Instant `json:"latest_record,omitempty"`
	Totals
	Incarnations []IncarnationDescription `json:"incarnations"`
}

// IncarnationDescription is one incarnation of a topic (a topic deleted
// and re-created under its name is a new one, with a new topic ID).
type IncarnationDescription struct {
	TopicID           string            `json:"topic_id,omitempty"`
	Current           bool              `json:"current"`
	Partitions        int32             `json:"partitions"`
	ReplicationFactor int32             `json:"replication_factor,omitempty"`
	Configs           map[string]string `json:"configs,omitempty"`
	EarliestRecord    *Instant          `json:"earliest_record,omitempty"`
	LatestRecord      *Instant          `json:"latest_record,omitempty"`
	Totals
	PartitionDetails []PartitionDescription `json:"partition_details"`
}

// PartitionDescription is what a backup holds of one partition of one
// incarnation.
type PartitionDescription struct {
	Partition int32 `json:"partition"`
	Totals
	// EarliestOffset and LatestOffset are the first and last record's;
	// NextOffset the position after the last commit (-1: none).
	EarliestOffset *int64   `json:"earliest_offset,omitempty"`
	LatestOffset   *int64   `json:"latest_offset,omitempty"`
	NextOffset     int64    `json:"next_offset"`
	EarliestRecord *Instant `json:"earliest_record,omitempty"`
	LatestRecord   *Instant `json:"latest_record,omitempty"`
	// GapList lists the offsets the backup will never hold, and why.
	GapList    []GapDescription `json:"gap_list,omitempty"`
	LastCommit *time.Time       `json:"last_commit,omitempty"`
	// Error says why the partition's manifest could not be read.
	Error string `json:"error,omitempty"`
}

// GapDescription is a recorded gap: offsets FromOffset to ToOffset
// (inclusive) that the cluster had deleted before they were read.
type GapDescription struct {
	FromOffset int64     `json:"from_offset"`
	ToOffset   int64     `json:"to_offset"`
	Reason     string    `json:"reason"`
	RecordedAt time.Time `json:"recorded_at"`
}

// GroupsDescription is the consumer groups' offsets stored with the
// backup.
type GroupsDescription struct {
	TakenAt *Instant `json:"taken_at"`
	Groups  []string `json:"groups"`
	// Offsets is how many committed offsets they hold in all.
	Offsets int `json:"offsets"`
}

// summarize sums up one partition's entries (of one incarnation).
func summarize(partition int32, entries []Entry) PartitionDescription {
	d := PartitionDescription{Partition: partition, NextOffset: -1}
	var minTS, maxTS int64
	for _, e := range entries {
		d.NextOffset = e.NextOffset
		at := e.CreatedAt
		if d.LastCommit == nil || at.After(*d.LastCommit) {
			d.LastCommit = &at
		}
		switch e.Kind {
		case KindGap:
			d.Gaps++
			d.GapList = append(d.GapList, GapDescription{FromOffset: e.MinOffset, ToOffset: e.MaxOffset, Reason: e.Reason, RecordedAt: e.CreatedAt})
		case KindSegment:
			d.Segments++
			d.StoredBytes += e.Size
			d.UncompressedBytes += e.Uncompressed
			if e.Records == 0 {
				continue
			}
			if d.Records == 0 {
				first, ts := e.MinOffset, e.MinTimestamp
				d.EarliestOffset, minTS, maxTS = &first, ts, e.MaxTimestamp
			}
			d.Records += e.Records
			last := e.MaxOffset
			d.LatestOffset = &last
			minTS, maxTS = min(minTS, e.MinTimestamp), max(maxTS, e.MaxTimestamp)
		}
	}
	if d.Records > 0 {
		d.EarliestRecord, d.LatestRecord = At(minTS), At(maxTS)
	}
	return d
}

// widen returns the earlier (or, with later, the later) of two instants.
func widen(a, b *Instant, later bool) *Instant {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	case later == (b.EpochMS > a.EpochMS):
		return b
	}
	return a
}

func latest(a, b *time.Time) *time.Time {
	if a == nil || (b != nil && b.After(*a)) {
		return b
	}
	return a
}

// scan is what a backup's manifests say it holds, read once for describe
// and validate.
type scan struct {
	b      *Backup
	meta   Metadata
	metaOK error // why the metadata could not be read
	leases map[int64]Lease
	parts  []*partScan // in topic, then partition order
}

// partScan is one partition and its manifest (unread when the scan was
// asked for other partitions).
type partScan struct {
	topic     string
	partition int32
	prefix    string // its objects' key prefix
	manifest  Manifest
	err       error // the manifest could not be read (whole)
}

// scanConcurrency is how many partitions are read at once: a store's
// latency, not its bandwidth, bounds reading manifests.
const scanConcurrency = 16

// scanBackup reads a backup's leases, metadata and the manifest of every
// partition that want selects (all when nil).
func scanBackup(ctx context.Context, b *Backup, want func(topic string, partition int32) bool) (*scan, error) {
	s := &scan{b: b, leases: map[int64]Lease{}}
	objs, err := ListAll(ctx, b.store, b.keys.LeasePrefix(), "")
	if err != nil {
		return nil, fmt.Errorf("backup %q: list its leases: %w", b.keys.ID, err)
	}
	for _, o := range objs {
		l, err := readLease(ctx, b.store, o.Key)
		if err != nil {
			continue // a lease being written; the others tell the state
		}
		s.leases[l.Epoch] = l
	}
	var m Metadata
	if m, _, s.metaOK = b.metadata(ctx); s.metaOK != nil {
		return s, nil
	}
	s.meta = m
	for _, t := range m.Topics {
		for p := range m.Partitions(t.Name) {
			s.parts = append(s.parts, &partScan{topic: t.Name, partition: p, prefix: b.keys.Partition(t.Name, p)})
		}
	}
	err = forEach(ctx, scanConcurrency, s.wanted(want), func(ps *partScan) error {
		ps.manifest, ps.err = b.Manifest(ctx, ps.topic, ps.partition)
		return nil
	})
	return s, err
}

// wanted returns the partitions that want selects (all when nil).
func (s *scan) wanted(want func(topic string, partition int32) bool) []*partScan {
	if want == nil {
		return s.parts
	}
	return slices.DeleteFunc(slices.Clone(s.parts), func(ps *partScan) bool { return !want(ps.topic, ps.partition) })
}

// forEach runs fn on every item, n at a time, and returns the first
// error.
func forEach[T any](ctx context.Context, n int, items []T, fn func(T) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	for _, it := range items {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := fn(it); err != nil {
				cancel(err)
			}
		}()
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return ctx.Err()
}

// incarnations returns a topic's incarnations in the order they were
// backed up, the current one last.
func (s *scan) incarnations(topic string) []sdk.TopicMetadata {
	var out []sdk.TopicMetadata
	for _, t := range s.meta.Earlier {
		if t.Name == topic {
			out = append(out, t)
		}
	}
	if t, ok := s.meta.Topic(topic); ok {
		out = append(out, t)
	}
	return out
}

// of returns the partition's entries of one incarnation: all of them when
// the topic has had only one.
func (ps *partScan) of(id sdk.TopicID, only bool) []Entry {
	if only || id == (sdk.TopicID{}) {
		return ps.manifest.Entries
	}
	return ps.manifest.Of(id.String()).Entries
}

// describe sums the scan up.
func (s *scan) describe() Description {
	b := s.b
	d := Description{BackupID: b.keys.ID, FormatVersion: b.Info.Version, CreatedAt: b.Info.CreatedAt,
		ClusterID: s.meta.ClusterID, Encryption: b.Info.Encryption, LastRun: runState(s.leases, alive), Topics: []TopicDescription{}}
	byTopic := map[string][]*partScan{}
	for _, ps := range s.parts {
		byTopic[ps.topic] = append(byTopic[ps.topic], ps)
	}
	for _, t := range s.meta.Topics {
		td := TopicDescription{Name: t.Name, Partitions: t.Partitions}
		incs := s.incarnations(t.Name)
		for _, inc := range incs {
			id := IncarnationDescription{Current: inc.ID == t.ID, Partitions: inc.Partitions,
				ReplicationFactor: inc.ReplicationFactor, Configs: inc.Configs, PartitionDetails: []PartitionDescription{}}
			if inc.ID != (sdk.TopicID{}) {
				id.TopicID = inc.ID.String()
			}
			for _, ps := range byTopic[t.Name] {
				entries := ps.of(inc.ID, len(incs) == 1)
				if ps.partition >= inc.Partitions && len(entries) == 0 {
					continue
				}
				pd := summarize(ps.partition, entries)
				if ps.err != nil {
					pd.Error = ps.err.Error()
				}
				id.add(pd.Totals)
				id.EarliestRecord = widen(id.EarliestRecord, pd.EarliestRecord, false)
				id.LatestRecord = widen(id.LatestRecord, pd.LatestRecord, true)
				d.LastCommit = latest(d.LastCommit, pd.LastCommit)
				id.PartitionDetails = append(id.PartitionDetails, pd)
			}
			td.add(id.Totals)
			td.EarliestRecord = widen(td.EarliestRecord, id.EarliestRecord, false)
			td.LatestRecord = widen(td.LatestRecord, id.LatestRecord, true)
			td.Incarnations = append(td.Incarnations, id)
		}
		d.add(td.Totals)
		d.EarliestRecord = widen(d.EarliestRecord, td.EarliestRecord, false)
		d.LatestRecord = widen(d.LatestRecord, td.LatestRecord, true)
		d.Topics = append(d.Topics, td)
	}
	if !s.meta.GroupsTakenAt.IsZero() {
		g := &GroupsDescription{TakenAt: At(s.meta.GroupsTakenAt.UnixMilli()), Groups: []string{}}
		for _, gr := range s.meta.Groups {
			g.Groups = append(g.Groups, gr.Group)
			g.Offsets += len(gr.Offsets)
		}
		slices.Sort(g.Groups)
		d.ConsumerGroups = g
	}
	return d
}

// Describe reads a backup's description (without reading its segments).
func Describe(ctx context.Context, store BlobStore, id string) (Description, error) {
	b, err := OpenBackup(ctx, store, id)
	if err != nil {
		return Description{}, err
	}
	s, err := scanBackup(ctx, b, nil)
	if err != nil {
		return Description{}, err
	}
	if s.metaOK != nil {
		return Description{}, s.metaOK
	}
	return s.describe(), nil
}

// segmentName is a segment object's name parsed: segment-<base>-<epoch>
// and, when known, -<topic id>.
type segmentName struct {
	base, epoch int64
	topicID     string
}

func parseSegmentName(name string) (segmentName, bool) {
	rest, ok := strings.CutPrefix(name, "segment-")
	if !ok {
		return segmentName{}, false
	}
	parts := strings.SplitN(rest, "-", 3)
	if len(parts) < 2 {
		return segmentName{}, false
	}
	var n segmentName
	var err1, err2 error
	n.base, err1 = strconv.ParseInt(parts[0], 10, 64)
	n.epoch, err2 = strconv.ParseInt(parts[1], 10, 64)
	if err1 != nil || err2 != nil {
		return segmentName{}, false
	}
	if len(parts) == 3 {
		n.topicID = parts[2]
	}
	return n, true
}

// describeJSON is Describe as JSON, for the storage service.
func describeJSON(ctx context.Context, store BlobStore, id string) ([]byte, error) {
	d, err := Describe(ctx, store, id)
	if err != nil {
		return nil, err
	}
	return json.Marshal(d)
}

// osHostname names this host, as leases do.
var osHostname = os.Hostname
