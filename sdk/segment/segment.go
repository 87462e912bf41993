// Package segment is kpipe's backup format on a file system: per
// topic-partition, files ("segments") that each hold an Arrow IPC stream of
// records in the schema of package record, their buffers compressed with
// zstd, lz4 or not at all, plus an
// append-only manifest that lists every committed segment with its offset
// and timestamp bounds, record count, size and CRC-32C checksum.
//
// Layout under a backup root:
//
//	<backup_id>/backup.json                                   what the backup is
//	<backup_id>/topics/<topic>/<partition>/manifest.jsonl    one line per segment
//	<backup_id>/topics/<topic>/<partition>/<base offset>.arrows
//
// A segment is written to a temporary file, fsynced and renamed into place,
// and only then appended (and fsynced) to the manifest. A segment that is not
// in the manifest does not exist; a torn last manifest line is cut off when
// the partition is opened for writing.
package segment

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/kpipe/kpipe/sdk/record"
)

// FormatName and FormatVersion identify the backup layout in backup.json.
// Version 2: segments are Arrow IPC streams (.arrows). Version 1, never
// released, held Arrow IPC files.
const (
	FormatName    = "kpipe-backup"
	FormatVersion = 2
)

// ErrNotFound is returned by ReadInfo for a backup that does not exist.
var ErrNotFound = errors.New("backup not found")

// Compression codecs of a segment.
const (
	Zstd = "zstd"
	LZ4  = "lz4"
	None = "none"
)

// Entry is one manifest line: a committed segment.
type Entry struct {
	File         string    `json:"file"`
	MinOffset    int64     `json:"min_offset"`
	MaxOffset    int64     `json:"max_offset"`
	NextOffset   int64     `json:"next_offset"`
	MinTimestamp int64     `json:"min_timestamp"`
	MaxTimestamp int64     `json:"max_timestamp"`
	Records      int64     `json:"records"`
	Size         int64     `json:"size"`
	Checksum     string    `json:"checksum"`
	Compression  string    `json:"compression"`
	CreatedAt    time.Time `json:"created_at"`
}

// Overlaps reports whether the segment may hold a record with a timestamp in
// [start, end] (bounds inclusive; a negative bound is open).
func (e Entry) Overlaps(start, end int64) bool {
	return record.Window{Start: start, End: end}.Overlaps(e.MinTimestamp, e.MaxTimestamp)
}

// Info is backup.json.
type Info struct {
	Format    string    `json:"format"`
	Version   int       `json:"version"`
	BackupID  string    `json:"backup_id"`
	CreatedAt time.Time `json:"created_at"`
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// NewCRC returns a CRC-32C hash, the checksum of segments.
func NewCRC() interface {
	Write([]byte) (int, error)
	Sum32() uint32
} {
	return crc32.New(castagnoli)
}

// FormatChecksum renders a CRC-32C as stored in the manifest.
func FormatChecksum(sum uint32) string { return fmt.Sprintf("crc32c:%08x", sum) }

// FileName is the segment file name for a base offset.
func FileName(baseOffset int64) string { return fmt.Sprintf("%020d.arrows", baseOffset) }

// Backup is one backup under a root folder.
type Backup struct {
	Root string
	ID   string
}

// Dir is the backup's folder.
func (b Backup) Dir() string { return filepath.Join(b.Root, b.ID) }

// PartitionDir is the folder of one topic-partition.
func (b Backup) PartitionDir(topic string, partition int32) string {
	return filepath.Join(b.Dir(), "topics", topic, strconv.Itoa(int(partition)))
}

// Partition is the manifest of one topic-partition.
type Partition struct {
	Topic     string
	Partition int32
	Entries   []Entry
}

// NextOffset is the position after the last committed segment, or -1.
func (p Partition) NextOffset() int64 {
	if len(p.Entries) == 0 {
		return -1
	}
	return p.Entries[len(p.Entries)-1].NextOffset
}

// Records is the number of records in all segments.
func (p Partition) Records() int64 {
	var n int64
	for _, e := range p.Entries {
		n += e.Records
	}
	return n
}

// ReadInfo reads backup.json.
func (b Backup) ReadInfo() (Info, error) {
	var info Info
	data, err := os.ReadFile(filepath.Join(b.Dir(), "backup.json"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return info, fmt.Errorf("%w: %q not found under %s (no %s)", ErrNotFound, b.ID, b.Root, filepath.Join(b.ID, "backup.json"))
		}
		return info, err
	}
	if err := json.Unmarshal(data, &info); err != nil {
		return info, fmt.Errorf("backup %q: backup.json: %w", b.ID, err)
	}
	if info.Format != FormatName || info.Version != FormatVersion {
		return info, fmt.Errorf("backup %q: backup.json says format %q version %d; this kpipe reads %q version %d: use the kpipe that wrote it, or back up into a new backup id",
			b.ID, info.Format, info.Version, FormatName, FormatVersion)
	}
	return info, nil
}

// Partitions reads the manifests of every topic-partition in the backup,
// sorted by topic and partition.
func (b Backup) Partitions() ([]Partition, error) {
	topicsDir := filepath.Join(b.Dir(), "topics")
	topics, err := os.ReadDir(topicsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read backup %q: %w", b.ID, err)
	}
	var out []Partition
	for _, t := range topics {
		if !t.IsDir() {
			continue
		}
		parts, err := os.ReadDir(filepath.Join(topicsDir, t.Name()))
		if err != nil {
			return nil, fmt.Errorf("read backup %q: %w", b.ID, err)
		}
		for _, pd := range parts {
			n, err := strconv.ParseInt(pd.Name(), 10, 32)
			if err != nil || !pd.IsDir() {
				continue
			}
			entries, _, err := ReadManifest(filepath.Join(topicsDir, t.Name(), pd.Name()))
			if err != nil {
				return nil, err
			}
			out = append(out, Partition{Topic: t.Name(), Partition: int32(n), Entries: entries})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Topic != out[j].Topic {
			return out[i].Topic < out[j].Topic
		}
		return out[i].Partition < out[j].Partition
	})
	return out, nil
}

// Records is the number of records the backup's manifests list, over all
// its partitions. It reads manifests only, not segments.
func (b Backup) Records() (int64, error) {
	parts, err := b.Partitions()
	if err != nil {
		return 0, err
	}
	var n int64
	for _, p := range parts {
		n += p.Records()
	}
	return n, nil
}

// ManifestName is the manifest file in a partition folder.
const ManifestName = "manifest.jsonl"

// ReadManifest reads a partition's manifest. good is the length of the
// well-formed prefix of the file: a crash while appending can leave a torn
// last line, which is not part of the manifest.
func ReadManifest(dir string) (entries []Entry, good int64, err error) {
	data, err := os.ReadFile(filepath.Join(dir, ManifestName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read manifest: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if good+int64(len(line)) >= int64(len(data)) {
			break // no newline: torn
		}
		var e Entry
		if err := json.Unmarshal(line, &e); err != nil {
			// A line is appended with its newline in one write: a complete
			// line that does not parse is damage, not a torn append.
			return nil, 0, fmt.Errorf("manifest %s: line %d is corrupt: %v", filepath.Join(dir, ManifestName), len(entries)+1, err)
		}
		entries = append(entries, e)
		good += int64(len(line)) + 1
	}
	return entries, good, nil
}

// AppendManifest appends e to the manifest in dir and fsyncs it.
func AppendManifest(dir string, e Entry) error {
	line, err := json.Marshal(e)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(dir, ManifestName), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("append manifest: %w", err)
	}
	if _, err := f.Write(append(line, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("append manifest: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync manifest: %w", err)
	}
	return f.Close()
}

// RepairPartition prepares a partition folder for appending after a crash:
// it cuts a torn last manifest line and removes temporary files. It returns
// the committed entries.
func RepairPartition(dir string) ([]Entry, error) {
	entries, good, err := ReadManifest(dir)
	if err != nil {
		return nil, err
	}
	mp := filepath.Join(dir, ManifestName)
	if st, err := os.Stat(mp); err == nil && st.Size() > good {
		if err := os.Truncate(mp, good); err != nil {
			return nil, fmt.Errorf("repair manifest: %w", err)
		}
	}
	files, _ := os.ReadDir(dir)
	for _, f := range files {
		if strings.HasPrefix(f.Name(), ".") && strings.Contains(f.Name(), ".tmp-") {
			os.Remove(filepath.Join(dir, f.Name()))
		}
	}
	return entries, nil
}

// MetadataName is the file of a backup that describes its topics.
const MetadataName = "metadata.json"

// Topic is what a backup keeps of a topic, for a restore to recreate it.
type Topic struct {
	Name string `json:"name"`
	// ID is the Kafka topic ID of the incarnation backed up (URL-safe
	// base64, as Kafka prints it); empty when unknown.
	ID                string            `json:"topic_id,omitempty"`
	Partitions        int32             `json:"partitions"`
	ReplicationFactor int32             `json:"replication_factor,omitempty"`
	Configs           map[string]string `json:"configs,omitempty"`
}

// Metadata is metadata.json: the backup's topics, sorted by name.
type Metadata struct {
	Topics []Topic `json:"topics"`
}

// ReadMetadata reads metadata.json; ok is false when the backup has none
// (it was written before kpipe stored it).
func (b Backup) ReadMetadata() (m Metadata, ok bool, err error) {
	data, err := os.ReadFile(filepath.Join(b.Dir(), MetadataName))
	if errors.Is(err, os.ErrNotExist) {
		return Metadata{}, false, nil
	}
	if err != nil {
		return Metadata{}, false, fmt.Errorf("backup %q: %w", b.ID, err)
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return Metadata{}, false, fmt.Errorf("backup %q: %s is corrupt: %v", b.ID, MetadataName, err)
	}
	return m, true, nil
}

// MergeMetadata stores the topics of m in metadata.json, replacing those of
// the same name and keeping the others, atomically.
func (b Backup) MergeMetadata(m Metadata) error {
	old, _, err := b.ReadMetadata()
	if err != nil {
		return err
	}
	byName := map[string]Topic{}
	for _, t := range old.Topics {
		byName[t.Name] = t
	}
	for _, t := range m.Topics {
		byName[t.Name] = t
	}
	out := Metadata{Topics: make([]Topic, 0, len(byName))}
	for _, t := range byName {
		out.Topics = append(out.Topics, t)
	}
	sort.Slice(out.Topics, func(i, j int) bool { return out.Topics[i].Name < out.Topics[j].Name })
	data, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAtomic(filepath.Join(b.Dir(), MetadataName), data)
}
