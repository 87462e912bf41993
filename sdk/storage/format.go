package storage

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/record"
)

// Format 3 of a backup, as objects of a BlobStore. Under the backup's id:
//
//	<id>/backup.json                              Info, written once
//	<id>/lease/<epoch>                            a writer's lease (Lease)
//	<id>/metadata/<version>                       the topics' metadata, a new object per change
//	<id>/topics/<topic>/<partition>/segment-<base offset>-<epoch>[-<topic id>]
//	                                              a segment: an Arrow IPC stream of frames
//	<id>/topics/<topic>/<partition>/entry-<seq>    the commit of one segment, gap or fence (Entry)
//	<id>/topics/<topic>/<partition>/snapshot-<seq> every entry up to seq (Snapshot)
//
// A topic deleted and re-created under its name is a new incarnation (a
// new topic ID): its partitions' entries follow the old ones' in the same
// manifests, their offsets starting over, each entry naming its topic ID;
// readers take one incarnation at a time.
//
// Numbers in keys are zero-padded to 20 digits, so that key order is number
// order. No object is ever appended to or rewritten, but for a lease's
// renewal: a segment counts once the entry that names it exists, and an
// entry is created only if absent, so of two writers exactly one commits
// each seq.
const (
	FormatName    = "kpipe-backup"
	FormatVersion = 3
)

// Info is backup.json: what the backup is.
type Info struct {
	Format    string    `json:"format"`
	Version   int       `json:"version"`
	BackupID  string    `json:"backup_id"`
	CreatedAt time.Time `json:"created_at"`
	// Encryption is set when the backup's segments are encrypted at rest:
	// from its first run on, with one key.
	Encryption *Encryption `json:"encryption,omitempty"`
}

// Encryption names the cipher and the key of an encrypted backup.
type Encryption struct {
	Cipher string `json:"cipher"`
	KeyID  string `json:"key_id"`
}

// Metadata is a backup's metadata object: its topics, as last seen, and
// the incarnations before of topics re-created under the same name.
type Metadata struct {
	sdk.Metadata
	// Earlier holds topics' incarnations before their current one, in the
	// order they were replaced.
	Earlier []sdk.TopicMetadata `json:"earlier_incarnations,omitempty"`
}

// MaxPartitions bounds the partitions of one topic a backup's metadata may
// name; more is damage, not a topic.
const MaxPartitions = 1 << 20

// check refuses metadata that no backup writes: a topic without a name or
// with a partition count out of bounds.
func (m Metadata) check() error {
	for _, t := range append(slices.Clone(m.Earlier), m.Topics...) {
		if t.Name == "" {
			return errors.New("a topic without a name")
		}
		if t.Partitions < 0 || t.Partitions > MaxPartitions {
			return fmt.Errorf("topic %s has %d partitions, outside 0..%d", t.Name, t.Partitions, MaxPartitions)
		}
	}
	return nil
}

// merge returns m with the topics of n: a topic of n replaces the one of
// the same name, which goes to Earlier when n's is another incarnation.
// Groups come whole from the newer snapshot of them.
func (m Metadata) merge(n sdk.Metadata) Metadata {
	byName := map[string]sdk.TopicMetadata{}
	for _, t := range m.Topics {
		byName[t.Name] = t
	}
	out := Metadata{Metadata: sdk.Metadata{ClusterID: cmp.Or(n.ClusterID, m.ClusterID), Groups: m.Groups, GroupsTakenAt: m.GroupsTakenAt},
		Earlier: slices.Clone(m.Earlier)}
	if !n.GroupsTakenAt.IsZero() { // a newer snapshot of the groups
		out.Groups, out.GroupsTakenAt = n.Groups, n.GroupsTakenAt
	}
	for _, t := range n.Topics {
		if old, ok := byName[t.Name]; ok && old.ID != (sdk.TopicID{}) && t.ID != (sdk.TopicID{}) && old.ID != t.ID {
			out.Earlier = append(out.Earlier, old)
		}
		byName[t.Name] = t
	}
	for _, t := range byName {
		out.Topics = append(out.Topics, t)
	}
	sort.Slice(out.Topics, func(i, j int) bool { return out.Topics[i].Name < out.Topics[j].Name })
	return out
}

// Incarnation returns the metadata of one incarnation of a topic: the
// current one when id is empty or names it.
func (m Metadata) Incarnation(topic, id string) (sdk.TopicMetadata, bool) {
	if t, ok := m.Topic(topic); ok && (id == "" || t.ID.String() == id) {
		return t, true
	}
	for _, t := range m.Earlier {
		if t.Name == topic && t.ID.String() == id {
			return t, true
		}
	}
	return sdk.TopicMetadata{}, false
}

// Partitions is the most partitions any incarnation of the topic had: the
// partitions the backup may hold entries of.
func (m Metadata) Partitions(topic string) int32 {
	var n int32
	for _, t := range append(m.Earlier, m.Topics...) {
		if t.Name == topic {
			n = max(n, t.Partitions)
		}
	}
	return n
}

// Entry kinds.
const (
	// KindSegment commits a segment.
	KindSegment = "segment"
	// KindGap records offsets that will never be in the backup (deleted
	// by retention before they were read, say).
	KindGap = "gap"
	// KindFence marks where a writer that took the lease over began: the
	// writer before it can commit nothing after it.
	KindFence = "fence"
)

// Entry is one commit of a partition.
type Entry struct {
	Seq   int64  `json:"seq"`
	Kind  string `json:"kind"`
	Epoch int64  `json:"epoch"`
	// TopicID is the incarnation of the topic the records come from (as
	// Kafka prints it); empty when unknown.
	TopicID string `json:"topic_id,omitempty"`
	// A segment's: its object, size, CRC-32C, codec and bounds.
	Segment      string `json:"segment,omitempty"`
	Size         int64  `json:"size,omitempty"`
	Checksum     string `json:"checksum,omitempty"`
	Compression  string `json:"compression,omitempty"`
	Records      int64  `json:"records,omitempty"`
	MinOffset    int64  `json:"min_offset"`
	MaxOffset    int64  `json:"max_offset"`
	MinTimestamp int64  `json:"min_timestamp,omitempty"`
	MaxTimestamp int64  `json:"max_timestamp,omitempty"`
	// NextOffset is the partition's position after the entry: for a gap,
	// past the offsets it skips.
	NextOffset int64 `json:"next_offset"`
	// FromOffset is the partition's position before the entry: the entry
	// before's NextOffset, or for an incarnation's first entry its
	// MinOffset. Offsets between it and MinOffset hold no records (control
	// records, compacted ones), so a validator tells a lost entry from them.
	FromOffset int64 `json:"from_offset"`
	// Uncompressed is how many bytes the segment's batches hold once
	// decompressed (Arrow buffers); 0 when unknown.
	Uncompressed int64 `json:"uncompressed_bytes,omitempty"`
	// Batches indexes the segment's record batches.
	Batches []BatchIndex `json:"batches,omitempty"`
	// Encryption names how each batch's bytes are encrypted (Cipher), and
	// KeyID with which key; both empty when they are not.
	Encryption string `json:"encryption,omitempty"`
	KeyID      string `json:"key_id,omitempty"`
	// Reason says why a gap's offsets are missing.
	Reason    string    `json:"reason,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// BatchIndex describes one record batch of a segment, so that a reader can
// read and verify it alone.
type BatchIndex struct {
	// Start and Length are its byte range in the segment.
	Start, Length int64
	Records       int64
	MinOffset     int64
	MaxOffset     int64
	MinTimestamp  int64
	MaxTimestamp  int64
	// MaxRecordBytes is the size of its largest record (key, value and
	// headers); 0 when unknown.
	MaxRecordBytes int64
	// CRC is the CRC-32C of its bytes.
	CRC uint32
}

// MarshalJSON writes a batch index compactly, as an array in the order of
// the fields.
func (b BatchIndex) MarshalJSON() ([]byte, error) {
	return json.Marshal([9]int64{b.Start, b.Length, b.Records, b.MinOffset, b.MaxOffset, b.MinTimestamp, b.MaxTimestamp, b.MaxRecordBytes, int64(b.CRC)})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (b *BatchIndex) UnmarshalJSON(data []byte) error {
	var a [9]int64
	if err := json.Unmarshal(data, &a); err != nil {
		return fmt.Errorf("batch index: %w", err)
	}
	if a[8] < 0 || a[8] > 1<<32-1 {
		return fmt.Errorf("batch index: CRC %d out of range", a[8])
	}
	*b = BatchIndex{a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], uint32(a[8])}
	return nil
}

// Bounds returns the batch's count and bounds.
func (b BatchIndex) Bounds() record.Bounds {
	return record.Bounds{Count: b.Records, MinOffset: b.MinOffset, MaxOffset: b.MaxOffset, MinTimestamp: b.MinTimestamp, MaxTimestamp: b.MaxTimestamp}
}

// Snapshot is every entry of a partition up to Seq, fences left out.
type Snapshot struct {
	Seq     int64   `json:"seq"`
	Entries []Entry `json:"entries"`
}

// Lease is a writer's claim on a backup. Epochs grow by one with each
// writer; the writer of the highest epoch holds the backup.
type Lease struct {
	Epoch int64  `json:"epoch"`
	Host  string `json:"host"`
	Pid   int    `json:"pid"`
	// Since is when the writer took the lease; Renewed when it last said
	// it is alive, which it does every TTL/3 until it ends.
	Since   time.Time     `json:"since"`
	Renewed time.Time     `json:"renewed"`
	TTL     time.Duration `json:"ttl"`
	// Released says the writer ended and let the lease go.
	Released bool `json:"released,omitempty"`
	// Outcome is how the writer's run ended, once released: complete
	// (its source reached its end) or stopped (by a signal).
	Outcome string `json:"outcome,omitempty"`
}

// A backup run's outcomes, as its lease records them.
const (
	OutcomeComplete = "complete"
	OutcomeStopped  = "stopped"
	// OutcomeNotStarted: the run failed before data could flow. Its lease
	// is deleted, or, when it fenced the run before it, released with this
	// outcome and skipped by the backup's state.
	OutcomeNotStarted = "not_started"
	// OutcomeFailed: the run failed; its lease is left unreleased.
	OutcomeFailed = "failed"
)

// num renders a number for a key: zero-padded, so that key order is number
// order.
func num(n int64) string { return fmt.Sprintf("%020d", n) }

// parseNum reads the number a key's last part starts with, after its kind
// ("entry-", "segment-" and so on) if it has one.
func parseNum(key string) (int64, error) {
	name := key[strings.LastIndex(key, "/")+1:]
	if name != "" && (name[0] < '0' || name[0] > '9') {
		_, name, _ = strings.Cut(name, "-")
	}
	if i := strings.IndexByte(name, '-'); i >= 0 {
		name = name[:i]
	}
	return strconv.ParseInt(name, 10, 64)
}

// Keys names the objects of one backup.
type Keys struct{ ID string }

func (k Keys) Info() string                  { return k.ID + "/backup.json" }
func (k Keys) LeasePrefix() string           { return k.ID + "/lease/" }
func (k Keys) Lease(epoch int64) string      { return k.LeasePrefix() + num(epoch) }
func (k Keys) MetadataPrefix() string        { return k.ID + "/metadata/" }
func (k Keys) Metadata(version int64) string { return k.MetadataPrefix() + num(version) }

// Partition is the prefix of one topic-partition's objects.
func (k Keys) Partition(topic string, partition int32) string {
	return fmt.Sprintf("%s/topics/%s/%d/", k.ID, topicKey(topic), partition)
}

// EntriesPrefix, EntryKey, SnapshotsPrefix, SnapshotKey, SegmentsPrefix
// and SegmentKey name the objects of a partition, under its prefix p. They
// share one level (one folder on a file system: fewer folders to create
// and sync).
func EntriesPrefix(p string) string          { return p + "entry-" }
func EntryKey(p string, seq int64) string    { return EntriesPrefix(p) + num(seq) }
func SnapshotsPrefix(p string) string        { return p + "snapshot-" }
func SnapshotKey(p string, seq int64) string { return SnapshotsPrefix(p) + num(seq) }
func SegmentsPrefix(p string) string         { return p + "segment-" }

// A segment's key names the topic incarnation of its records, when known:
// a re-created topic's offsets start over, and its segments must not take
// the names of the old one's.
func SegmentKey(p string, base, epoch int64, topicID string) string {
	if topicID == "" {
		return fmt.Sprintf("%s%s-%d", SegmentsPrefix(p), num(base), epoch)
	}
	return fmt.Sprintf("%s%s-%d-%s", SegmentsPrefix(p), num(base), epoch, topicID)
}

// topicKey is a topic name as a key part: Kafka's names ([a-zA-Z0-9._-])
// as they are, but for a leading dot, which stores may reserve.
func topicKey(topic string) string {
	if strings.HasPrefix(topic, ".") {
		return "%2E" + url.PathEscape(topic[1:])
	}
	return url.PathEscape(topic)
}
