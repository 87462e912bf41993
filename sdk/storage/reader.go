package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"sync/atomic"

	"github.com/kpipe/kpipe/sdk"
)

// ErrBackupNotFound is returned for a backup id the store does not hold.
var ErrBackupNotFound = errors.New("backup not found")

func readInfo(ctx context.Context, store BlobStore, keys Keys) (Info, error) {
	var info Info
	data, err := readObject(ctx, store, keys.Info())
	if errors.Is(err, ErrNotFound) {
		return info, sdk.BadRequest(fmt.Errorf("%w: the storage holds no backup %q (no %s)", ErrBackupNotFound, keys.ID, keys.Info()))
	}
	if err != nil {
		return info, fmt.Errorf("backup %q: %w", keys.ID, err)
	}
	if err := json.Unmarshal(data, &info); err != nil {
		return info, fmt.Errorf("backup %q: %s is corrupt: %v", keys.ID, keys.Info(), err)
	}
	switch {
	case info.Format != FormatName:
		return info, fmt.Errorf("backup %q: %s says format %q, not %q: this is not a kpipe backup", keys.ID, keys.Info(), info.Format, FormatName)
	case info.Version < FormatVersion:
		return info, fmt.Errorf("backup %q is of format version %d, which this kpipe does not read (it reads version %d): back it up again into a new backup id", keys.ID, info.Version, FormatVersion)
	case info.Version > FormatVersion:
		return info, fmt.Errorf("backup %q is of format version %d, newer than this kpipe reads (version %d): use the kpipe that wrote it", keys.ID, info.Version, FormatVersion)
	}
	return info, nil
}

// Backup reads one backup of a store. Opening it and reading a partition's
// manifest cost a few requests each, however many segments there are.
type Backup struct {
	store BlobStore
	keys  Keys
	Info  Info
	key   *Key // decrypts the segments of an encrypted backup

	bytesRead atomic.Int64
}

// OpenBackup opens the backup id for reading.
func OpenBackup(ctx context.Context, store BlobStore, id string) (*Backup, error) {
	if err := CheckID(id); err != nil {
		return nil, sdk.BadRequest(err)
	}
	b := &Backup{store: store, keys: Keys{ID: id}}
	info, err := readInfo(ctx, store, b.keys)
	if err != nil {
		return nil, err
	}
	b.Info = info
	return b, nil
}

// UseKey sets the key that decrypts the backup's segments. It fails, with
// a message that says which, when the backup is encrypted with another
// key; a backup that is not encrypted needs none and ignores it.
func (b *Backup) UseKey(k *Key) error {
	if err := checkKey(b.Info, k, false); err != nil {
		return err
	}
	b.key = k
	return nil
}

// Encrypted says whether the backup's segments are encrypted.
func (b *Backup) Encrypted() bool { return b.Info.Encryption != nil }

// ID is the backup's id.
func (b *Backup) ID() string { return b.keys.ID }

// BytesRead is how many bytes of segments this Backup has read.
func (b *Backup) BytesRead() int64 { return b.bytesRead.Load() }

// Metadata returns the topics' metadata as last stored: their current
// incarnations.
func (b *Backup) Metadata(ctx context.Context) (sdk.Metadata, error) {
	m, _, err := b.metadata(ctx)
	return m.Metadata, err
}

// AllMetadata returns the topics' metadata as last stored, with the
// incarnations before the current ones.
func (b *Backup) AllMetadata(ctx context.Context) (Metadata, error) {
	m, _, err := b.metadata(ctx)
	return m, err
}

func (b *Backup) metadata(ctx context.Context) (Metadata, int64, error) {
	objs, err := ListAll(ctx, b.store, b.keys.MetadataPrefix(), "")
	if err != nil || len(objs) == 0 {
		return Metadata{}, 0, err
	}
	last := objs[len(objs)-1].Key
	version, err := parseNum(last)
	if err != nil {
		return Metadata{}, 0, fmt.Errorf("backup %q: metadata object %s: %w", b.keys.ID, last, err)
	}
	data, err := readObject(ctx, b.store, last)
	if err != nil {
		return Metadata{}, 0, fmt.Errorf("backup %q: %w", b.keys.ID, err)
	}
	var m Metadata
	if err := json.Unmarshal(data, &m); err != nil {
		return Metadata{}, 0, fmt.Errorf("backup %q: %s is corrupt: %v", b.keys.ID, last, err)
	}
	if err := m.check(); err != nil {
		return Metadata{}, 0, fmt.Errorf("backup %q: %s is corrupt: %v", b.keys.ID, last, err)
	}
	return m, version, nil
}

// Manifest is what a backup holds of one topic-partition: its committed
// segments and gaps, in order.
type Manifest struct {
	Topic     string
	Partition int32
	Entries   []Entry
	// LastSeq is the seq of the last entry (fences included); -1 for none.
	LastSeq int64

	sinceSnapshot int
}

// NextOffset is the position after the last entry; -1 when there is none.
func (m Manifest) NextOffset() int64 {
	if len(m.Entries) == 0 {
		return -1
	}
	return m.Entries[len(m.Entries)-1].NextOffset
}

// Incarnation is the topic ID of the last entry that names one; empty
// when none does.
func (m Manifest) Incarnation() string {
	for i := len(m.Entries) - 1; i >= 0; i-- {
		if id := m.Entries[i].TopicID; id != "" {
			return id
		}
	}
	return ""
}

// Of returns the manifest with only the entries of one topic incarnation
// (and those that name none); all of them when topicID is empty.
func (m Manifest) Of(topicID string) Manifest {
	if topicID == "" {
		return m
	}
	out := m
	out.Entries = nil
	for _, e := range m.Entries {
		if e.TopicID == "" || e.TopicID == topicID {
			out.Entries = append(out.Entries, e)
		}
	}
	return out
}

// Records is how many records the segments hold.
func (m Manifest) Records() int64 {
	var n int64
	for _, e := range m.Entries {
		n += e.Records
	}
	return n
}

// Manifest reads a partition's manifest: its newest snapshot and the
// entries after it.
func (b *Backup) Manifest(ctx context.Context, topic string, partition int32) (Manifest, error) {
	m := Manifest{Topic: topic, Partition: partition, LastSeq: -1}
	prefix := b.keys.Partition(topic, partition)
	where := fmt.Sprintf("backup %q, %s/%d", b.keys.ID, topic, partition)
	snaps, err := ListAll(ctx, b.store, SnapshotsPrefix(prefix), "")
	if err != nil {
		return m, fmt.Errorf("%s: %w", where, err)
	}
	after := ""
	// The newest snapshot, or the one before if the newest went away
	// (a writer removes old ones).
	for i := len(snaps) - 1; i >= 0; i-- {
		data, err := readObject(ctx, b.store, snaps[i].Key)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return m, fmt.Errorf("%s: %w", where, err)
		}
		var s Snapshot
		if err := json.Unmarshal(data, &s); err != nil {
			return m, fmt.Errorf("%s: snapshot %s is corrupt: %v", where, snaps[i].Key, err)
		}
		m.Entries, m.LastSeq, after = s.Entries, s.Seq, EntryKey(prefix, s.Seq)
		break
	}
	objs, err := ListAll(ctx, b.store, EntriesPrefix(prefix), after)
	if err != nil {
		return m, fmt.Errorf("%s: %w", where, err)
	}
	for _, o := range objs {
		seq, err := parseNum(o.Key)
		if err != nil {
			return m, fmt.Errorf("%s: entry object %s: %w", where, o.Key, err)
		}
		if seq != m.LastSeq+1 {
			return m, fmt.Errorf("%s: entry %d is missing (the entries go from %d to %d): the manifest is damaged", where, m.LastSeq+1, m.LastSeq, seq)
		}
		data, err := readObject(ctx, b.store, o.Key)
		if err != nil {
			return m, fmt.Errorf("%s: %w", where, err)
		}
		var e Entry
		if err := json.Unmarshal(data, &e); err != nil || e.Seq != seq {
			return m, fmt.Errorf("%s: entry %s is corrupt (seq %d, %v)", where, o.Key, e.Seq, err)
		}
		if e.Kind != KindFence {
			m.Entries = append(m.Entries, e)
		}
		m.LastSeq = seq
		m.sinceSnapshot++
	}
	return m, nil
}

// BatchReader reads chosen record batches of one segment, in order, each
// checked against its CRC-32C. Adjacent batches are read with one request.
type BatchReader struct {
	b       *Backup
	ctx     context.Context
	key     string
	batches []BatchIndex
	next    int
	r       io.ReadCloser
	runEnd  int // batches before it come from r
	buf     []byte
	err     error // a reader that cannot read at all

	topic     string
	partition int32
	segment   string
	crypt     *Key // set for an encrypted segment
	plain     []byte

	// Set by ReadAhead: ready is closed once fetched holds the runs of
	// adjacent batches, read from the store by another goroutine.
	ready   chan struct{}
	fetched []fetchedRun
}

// fetchedRun is a run of adjacent batches read ahead: its bytes, and the
// store's error opening it (opened false) or reading it.
type fetchedRun struct {
	end    int // the batches before it are in data
	data   []byte
	err    error
	opened bool
}

// Batches reads the batches of a segment entry that which lists (indexes
// into e.Batches, ascending); all of them when which is nil.
func (b *Backup) Batches(ctx context.Context, topic string, partition int32, e Entry, which []int) *BatchReader {
	key := b.keys.Partition(topic, partition) + e.Segment
	var k *Key
	switch {
	case e.Encryption == "" && b.Info.Encryption != nil:
		return &BatchReader{err: fmt.Errorf("segment %s is not encrypted, but the backup is: its entry was altered", key)}
	case e.Encryption == "":
	case e.Encryption != Cipher:
		return &BatchReader{err: fmt.Errorf("segment %s is encrypted with %q, which this kpipe cannot decrypt", key, e.Encryption)}
	case b.key == nil:
		return &BatchReader{err: fmt.Errorf("segment %s is encrypted (key %s): give its key with encryption_key_file or encryption_key_env", key, e.KeyID)}
	case b.key.ID != e.KeyID:
		return &BatchReader{err: fmt.Errorf("segment %s is encrypted with key %s, and the key given is %s: wrong key", key, e.KeyID, b.key.ID)}
	default:
		k = b.key
	}
	if faults := entryFaults(e); len(faults) > 0 {
		return &BatchReader{err: fmt.Errorf("segment %s: its entry is damaged: %s", key, strings.Join(faults, "; "))}
	}
	sel := e.Batches
	if which != nil {
		sel = make([]BatchIndex, len(which))
		for i, w := range which {
			sel[i] = e.Batches[w]
		}
	}
	return &BatchReader{b: b, ctx: ctx, key: key, batches: sel, topic: topic, partition: partition, segment: e.Segment, crypt: k}
}

// Next returns the next batch's frame, valid until the next call, and its
// index; io.EOF after the last.
func (r *BatchReader) Next() ([]byte, BatchIndex, error) {
	if r.err != nil {
		return nil, BatchIndex{}, r.err
	}
	if r.next >= len(r.batches) {
		r.Close()
		return nil, BatchIndex{}, io.EOF
	}
	bi := r.batches[r.next]
	if r.r == nil {
		rc, end, err := r.openRun()
		if errors.Is(err, ErrNotFound) {
			return nil, bi, fmt.Errorf("segment %s is missing", r.key)
		}
		if err != nil {
			return nil, bi, fmt.Errorf("segment %s: %w", r.key, err)
		}
		r.r, r.runEnd = rc, end
	}
	if cap(r.buf) < int(bi.Length) {
		r.buf = make([]byte, bi.Length)
	}
	frame := r.buf[:bi.Length]
	n, err := io.ReadFull(r.r, frame)
	r.b.bytesRead.Add(int64(n))
	if err != nil {
		return nil, bi, fmt.Errorf("segment %s: batch at byte %d: %d of %d bytes, then %v: the segment is cut short", r.key, bi.Start, n, bi.Length, err)
	}
	if sum := crc32.Checksum(frame, castagnoli); sum != bi.CRC {
		return nil, bi, fmt.Errorf("segment %s: batch at byte %d: checksum %s, the index says %s", r.key, bi.Start, FormatChecksum(sum), FormatChecksum(bi.CRC))
	}
	if r.crypt != nil {
		if r.plain, err = r.crypt.open(r.plain[:0], frame, batchAD(r.b.keys.ID, r.topic, r.partition, r.segment, bi.Start)); err != nil {
			return nil, bi, fmt.Errorf("segment %s: batch at byte %d: cannot decrypt it (%v): the key is not the one it was sealed with, or its bytes were altered", r.key, bi.Start, err)
		}
		frame = r.plain
	}
	r.next++
	if r.next == r.runEnd {
		r.r.Close()
		r.r = nil
	}
	return frame, bi, nil
}

// runFrom is the end of the run of adjacent batches that starts at batch i.
func (r *BatchReader) runFrom(i int) int {
	end := i + 1
	for end < len(r.batches) && r.batches[end].Start == r.batches[end-1].Start+r.batches[end-1].Length {
		end++
	}
	return end
}

// openRun opens the run of adjacent batches from the next one: from the
// store, or from what ReadAhead read.
func (r *BatchReader) openRun() (io.ReadCloser, int, error) {
	if r.ready != nil {
		select {
		case <-r.ready:
		case <-r.ctx.Done():
			return nil, 0, r.ctx.Err()
		}
		run := r.fetched[0]
		r.fetched = r.fetched[1:]
		if !run.opened {
			return nil, 0, run.err
		}
		var rd io.Reader = bytes.NewReader(run.data)
		if run.err != nil {
			rd = io.MultiReader(rd, errReader{run.err})
		}
		return io.NopCloser(rd), run.end, nil
	}
	end := r.runFrom(r.next)
	first, last := r.batches[r.next], r.batches[end-1]
	rc, err := r.b.store.Get(r.ctx, r.key, first.Start, last.Start+last.Length-first.Start)
	return rc, end, err
}

// ReadAhead starts reading the reader's batches from the store at once, in
// another goroutine, into memory; Next then takes them from there. Call it
// before Next.
func (r *BatchReader) ReadAhead() {
	if r.err != nil || r.ready != nil || r.next > 0 {
		return
	}
	r.ready = make(chan struct{})
	go func() {
		defer close(r.ready)
		for i := 0; i < len(r.batches); {
			end := r.runFrom(i)
			first, last := r.batches[i], r.batches[end-1]
			run := fetchedRun{end: end}
			rc, err := r.b.store.Get(r.ctx, r.key, first.Start, last.Start+last.Length-first.Start)
			if err != nil {
				r.fetched = append(r.fetched, fetchedRun{err: err})
				return // Next stops at it
			}
			run.data, run.err = readRun(rc, last.Start+last.Length-first.Start)
			run.opened = true
			rc.Close()
			r.fetched = append(r.fetched, run)
			i = end
		}
	}()
}

// errReader fails every read with err.
type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// Close ends reading early.
func (r *BatchReader) Close() {
	if r.r != nil {
		r.r.Close()
		r.r = nil
	}
}

// readRun reads the n bytes of a run of batches. Up to the size of a
// default segment it allocates them at once; past it, as they arrive, so an
// entry that claims more than the store holds costs no more than what it
// holds.
func readRun(r io.Reader, n int64) ([]byte, error) {
	const atOnce = 64 << 20
	buf := make([]byte, min(n, atOnce))
	got, err := io.ReadFull(r, buf)
	if err != nil || n <= atOnce {
		return buf[:got], err
	}
	var rest bytes.Buffer
	m, err := rest.ReadFrom(io.LimitReader(r, n-atOnce))
	if err == nil && m < n-atOnce {
		err = io.ErrUnexpectedEOF
	}
	return append(buf, rest.Bytes()...), err
}
