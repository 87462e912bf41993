package storage

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/record"
)

// DefaultSnapshotEvery is how many entries a partition gets between two
// snapshots.
const DefaultSnapshotEvery = 16

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// FormatChecksum renders a CRC-32C as entries store it.
func FormatChecksum(sum uint32) string { return fmt.Sprintf("crc32c:%08x", sum) }

// WriterOptions configure a backup writer.
type WriterOptions struct {
	Lease LeaseOptions
	// SnapshotEvery is how many entries a partition gets between two
	// snapshots; DefaultSnapshotEvery when 0.
	SnapshotEvery int
	// Orphans, when set, hears of the segments of a partition that no entry
	// names (left by a crash between a segment and its entry, or by a
	// writer that lost its lease), as the partition is opened: they are
	// never read, and stay for an operator to look at.
	Orphans func(topic string, partition int32, keys []string)
	// Key, when set, encrypts the segments (see crypt.go). A backup is
	// encrypted from its first run, or never.
	Key *Key
}

// Writer writes one backup. It holds the backup's lease from OpenWriter to
// Close: no other writer commits to the backup meanwhile, and once another
// takes the lease over (this one having stopped renewing it past its TTL),
// this one commits nothing more.
type Writer struct {
	store BlobStore
	keys  Keys
	lease *lease
	opts  WriterOptions

	mu          sync.Mutex
	parts       map[string]*PartitionWriter
	meta        Metadata
	metaVersion int64
	// pending is the Info of a backup this writer creates, until it is
	// stored.
	pending *Info
}

// CheckID checks a backup id: a name without slashes that does not start
// with a dot or an underscore (names the store keeps for itself).
func CheckID(id string) error {
	if id == "" || strings.ContainsAny(id, "/\\") || strings.HasPrefix(id, ".") || strings.HasPrefix(id, "_") {
		return fmt.Errorf("%q is not a valid backup id: use a name without slashes that starts with a letter or digit, such as \"daily-2024-11-10\"", id)
	}
	return nil
}

// OpenWriter opens the backup id for writing, creating it if new: it takes
// the lease (or fails with *HeldError), and reads what each partition
// holds. After a writer whose lease expired, every partition gets a fence
// entry first, so that writer can commit nothing more.
func OpenWriter(ctx context.Context, store BlobStore, id string, o WriterOptions) (*Writer, error) {
	if err := CheckID(id); err != nil {
		return nil, err
	}
	if o.SnapshotEvery <= 0 {
		o.SnapshotEvery = DefaultSnapshotEvery
	}
	if err := checkIfAbsent(ctx, store); err != nil {
		return nil, err
	}
	keys := Keys{ID: id}
	if info, err := readInfo(ctx, store, keys); err == nil {
		if err := checkKey(info, o.Key, true); err != nil {
			return nil, err // before taking the lease: a quick, clear refusal
		}
	}
	l, err := acquireLease(ctx, store, keys, o.Lease)
	if err != nil {
		return nil, err
	}
	w := &Writer{store: store, keys: keys, lease: l, opts: o, parts: map[string]*PartitionWriter{}}
	fail := func(err error) (*Writer, error) {
		l.release(context.WithoutCancel(ctx), "")
		return nil, err
	}
	// Read again under the lease: another writer may have created it.
	info, err := readInfo(ctx, store, keys)
	switch {
	case errors.Is(err, ErrBackupNotFound):
		// Created with its first commit, or by a Close that ends a run
		// with nothing to commit: a run that fails first leaves no
		// backup that looks like one.
		w.pending = &Info{Format: FormatName, Version: FormatVersion, BackupID: id, CreatedAt: time.Now().UTC()}
		if o.Key != nil {
			w.pending.Encryption = &Encryption{Cipher: Cipher, KeyID: o.Key.ID}
		}
	case err != nil:
		return fail(err) // never write into what cannot be read
	default:
		if err := checkKey(info, o.Key, true); err != nil {
			return fail(err)
		}
	}
	b := &Backup{store: store, keys: keys}
	if w.meta, w.metaVersion, err = b.metadata(ctx); err != nil {
		return fail(err)
	}
	for _, t := range w.meta.Topics {
		for p := range w.meta.Partitions(t.Name) {
			pw, err := w.Partition(ctx, t.Name, p)
			if err != nil {
				return fail(err)
			}
			if l.fence {
				if err := pw.fence(ctx); err != nil {
					return fail(err)
				}
			}
		}
	}
	return w, nil
}

// ErrIgnoresIfAbsent is why a store that does not honour create-if-absent
// gets no backup.
var ErrIgnoresIfAbsent = errors.New("the store ignores create-if-absent (on S3, the condition If-None-Match: *): a second create of one object succeeded, so two writers of one backup could overwrite each other's commits; kpipe writes no backup there: use a store, or a version of it, that honours conditional writes")

// checkIfAbsent creates a probe object twice, create-if-absent, and fails
// with ErrIgnoresIfAbsent unless the second create fails: the one-writer
// rule and every commit rest on it.
func checkIfAbsent(ctx context.Context, store BlobStore) error {
	var r [16]byte
	rand.Read(r[:])
	key := probes + hex.EncodeToString(r[:8])
	// Two different contents: a store that retries a create whose answer
	// was lost may accept the very bytes it holds as its own.
	put := func(data []byte) error {
		return store.Put(ctx, key, bytes.NewReader(data), int64(len(data)), PutOptions{IfAbsent: true})
	}
	if err := put(r[:8]); err != nil {
		return fmt.Errorf("probe create-if-absent: %w", err)
	}
	err := put(r[8:])
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	store.Delete(dctx, key)
	switch {
	case err == nil:
		return ErrIgnoresIfAbsent
	case !errors.Is(err, ErrExists):
		return fmt.Errorf("probe create-if-absent: %w", err)
	}
	return nil
}

// Lost is closed once the writer has lost its lease (Err says to whom).
func (w *Writer) Lost() <-chan struct{} { return w.lease.lostCh }

// Err is why the writer commits nothing more, once Lost is closed.
func (w *Writer) Err() error { return w.lease.err() }

// Epoch is the writer's lease epoch.
func (w *Writer) Epoch() int64 { return w.lease.cur.Epoch }

// Positions returns the position after the last commit of every partition
// that has one.
func (w *Writer) Positions() []sdk.Position {
	w.mu.Lock()
	defer w.mu.Unlock()
	var ps []sdk.Position
	for _, pw := range w.parts {
		if pw.next >= 0 {
			pos := sdk.Position{Topic: pw.topic, Partition: pw.partition, NextOffset: pw.next}
			pos.TopicID.UnmarshalText([]byte(pw.incarnation)) // zero when unknown
			ps = append(ps, pos)
		}
	}
	sort.Slice(ps, func(i, j int) bool {
		if ps[i].Topic != ps[j].Topic {
			return ps[i].Topic < ps[j].Topic
		}
		return ps[i].Partition < ps[j].Partition
	})
	return ps
}

// Partition returns the writer of a topic-partition, reading what the
// backup holds of it the first time.
func (w *Writer) Partition(ctx context.Context, topic string, partition int32) (*PartitionWriter, error) {
	k := fmt.Sprintf("%s/%d", topic, partition)
	w.mu.Lock()
	pw := w.parts[k]
	w.mu.Unlock()
	if pw != nil {
		return pw, nil
	}
	m, err := (&Backup{store: w.store, keys: w.keys}).Manifest(ctx, topic, partition)
	if err != nil {
		return nil, err
	}
	if w.opts.Orphans != nil {
		if err := w.findOrphans(ctx, m); err != nil {
			return nil, err
		}
	}
	pw = &PartitionWriter{w: w, prefix: w.keys.Partition(topic, partition), topic: topic, partition: partition,
		seq: m.LastSeq, next: m.NextOffset(), incarnation: m.Incarnation(), entries: m.Entries, sinceSnapshot: m.sinceSnapshot}
	w.mu.Lock()
	defer w.mu.Unlock()
	if other := w.parts[k]; other != nil {
		return other, nil
	}
	w.parts[k] = pw
	return pw, nil
}

// findOrphans lists a partition's segments and reports those no entry
// names.
func (w *Writer) findOrphans(ctx context.Context, m Manifest) error {
	prefix := w.keys.Partition(m.Topic, m.Partition)
	objs, err := ListAll(ctx, w.store, SegmentsPrefix(prefix), "")
	if err != nil {
		return fmt.Errorf("backup %q, %s/%d: %w", w.keys.ID, m.Topic, m.Partition, err)
	}
	named := map[string]bool{}
	for _, e := range m.Entries {
		named[prefix+e.Segment] = true
	}
	var orphans []string
	for _, o := range objs {
		if !named[o.Key] {
			orphans = append(orphans, o.Key)
		}
	}
	if len(orphans) > 0 {
		w.opts.Orphans(m.Topic, m.Partition, orphans)
	}
	return nil
}

// WriteMetadata stores the topics' metadata as a new version: the topics
// of m replace those of the same name, the others stay.
func (w *Writer) WriteMetadata(ctx context.Context, m sdk.Metadata) error {
	if err := w.lease.check(ctx); err != nil { // rare: worth asking the store
		return err
	}
	w.mu.Lock()
	merged := w.meta.merge(m)
	version := w.metaVersion + 1
	w.mu.Unlock()
	data, err := json.MarshalIndent(merged, "", "  ")
	if err != nil {
		return err
	}
	if err := w.store.Put(ctx, w.keys.Metadata(version), bytes.NewReader(data), int64(len(data)), PutOptions{IfAbsent: true}); err != nil {
		if errors.Is(err, ErrExists) {
			return w.lease.lost(ctx)
		}
		return fmt.Errorf("backup %q: write metadata: %w", w.keys.ID, err)
	}
	w.mu.Lock()
	w.meta, w.metaVersion = merged, version
	w.mu.Unlock()
	return nil
}

// AddPartition makes sure the metadata lists the partition: a topic it
// does not know is added with partition+1 partitions, a known topic with
// fewer grows. So every partition that holds data is in the metadata, which
// readers go by.
func (w *Writer) AddPartition(ctx context.Context, topic string, partition int32) error {
	w.mu.Lock()
	t, ok := w.meta.Topic(topic)
	w.mu.Unlock()
	if ok && t.Partitions > partition {
		return nil
	}
	t.Name, t.Partitions = topic, partition+1
	return w.WriteMetadata(ctx, sdk.Metadata{Topics: []sdk.TopicMetadata{t}})
}

// Close lets the lease go, recording the run's outcome (OutcomeComplete
// or OutcomeStopped; empty when unknown). With OutcomeNotStarted, the run
// wrote nothing: the lease is deleted, as if the run never was. With
// OutcomeFailed it stops renewing the lease and leaves it.
func (w *Writer) Close(ctx context.Context, outcome string) error {
	switch outcome {
	case OutcomeNotStarted:
		return w.lease.abandon(ctx)
	case OutcomeFailed:
		// Left as a crash leaves it: the lease stays, and with its
		// process gone the run reads as failed.
		w.lease.drop()
		return nil
	}
	if w.lease.err() == nil {
		if err := w.create(ctx); err != nil {
			w.lease.release(ctx, "")
			return err
		}
	}
	return w.lease.release(ctx, outcome)
}

// create stores the backup's Info, once, if this writer creates the
// backup. The id is registered first: a crash between the two leaves a
// registered id without a backup, which listing skips, never a backup
// nobody lists.
func (w *Writer) create(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.pending == nil {
		return nil
	}
	id := w.keys.ID
	if err := w.store.Put(ctx, registry+id, bytes.NewReader(nil), 0, PutOptions{IfAbsent: true}); err != nil && !errors.Is(err, ErrExists) {
		return fmt.Errorf("backup %q: register: %w", id, err)
	}
	data, _ := json.MarshalIndent(w.pending, "", "  ")
	if err := w.store.Put(ctx, w.keys.Info(), bytes.NewReader(data), int64(len(data)), PutOptions{IfAbsent: true}); err != nil && !errors.Is(err, ErrExists) {
		return fmt.Errorf("backup %q: create: %w", id, err)
	}
	w.pending = nil
	return nil
}

// PartitionWriter commits the segments of one topic-partition, one at a
// time, in offset order.
type PartitionWriter struct {
	w         *Writer
	prefix    string
	topic     string
	partition int32
	seq       int64 // last committed seq, -1 for none
	next      int64 // position after the last commit, -1 for none
	// incarnation is the topic ID of the last commit's records: next is a
	// position in that incarnation of the topic.
	incarnation   string
	entries       []Entry // committed segments and gaps
	sinceSnapshot int
}

// NextOffset is the position after the partition's last commit in its
// current incarnation; -1 when it has none.
func (pw *PartitionWriter) NextOffset() int64 { return pw.next }

// Incarnation is the topic ID the partition's last commit belongs to;
// empty when unknown.
func (pw *PartitionWriter) Incarnation() string { return pw.incarnation }

// NewIncarnation starts the partition over for a topic re-created under
// the same name (a new topic ID): its offsets begin again, and what is
// stored of the incarnations before stays as it is.
func (pw *PartitionWriter) NewIncarnation(topicID string) {
	pw.incarnation, pw.next = topicID, -1
}

// NewSegment starts a segment whose frames are stored in codec.
func (pw *PartitionWriter) NewSegment(ctx context.Context, codec record.Codec) *Segment {
	return &Segment{pw: pw, ctx: ctx, codec: codec, enc: record.NewEncoder(codec), started: time.Now()}
}

// commit creates entry e at the next seq; an entry already there means
// another writer took the backup over.
// The lease is not asked of the store first: the entry's create-if-absent
// is the fence, and renew watches the lease.
func (pw *PartitionWriter) commit(ctx context.Context, e Entry) (Entry, error) {
	if err := pw.w.lease.err(); err != nil {
		return Entry{}, err
	}
	if err := pw.w.create(ctx); err != nil {
		return Entry{}, err
	}
	e, err := pw.put(ctx, e)
	if errors.Is(err, ErrExists) {
		return Entry{}, pw.w.lease.lost(ctx)
	}
	return e, err
}

// put creates entry e at the next seq, or fails with ErrExists.
func (pw *PartitionWriter) put(ctx context.Context, e Entry) (Entry, error) {
	e.Seq, e.Epoch, e.CreatedAt = pw.seq+1, pw.w.Epoch(), time.Now().UTC()
	e.FromOffset = pw.next
	if pw.next < 0 || e.Kind == KindFence {
		e.FromOffset = e.MinOffset
	}
	data, err := json.Marshal(e)
	if err != nil {
		return Entry{}, err
	}
	if err := pw.w.store.Put(ctx, EntryKey(pw.prefix, e.Seq), bytes.NewReader(data), int64(len(data)), PutOptions{IfAbsent: true}); err != nil {
		if errors.Is(err, ErrExists) {
			return Entry{}, err
		}
		return Entry{}, fmt.Errorf("commit %s/%d: %w", pw.topic, pw.partition, err)
	}
	pw.seq = e.Seq
	if e.Kind != KindFence {
		pw.entries = append(pw.entries, e)
		pw.next = e.NextOffset
		if e.TopicID != "" {
			pw.incarnation = e.TopicID
		}
	}
	pw.sinceSnapshot++
	if pw.sinceSnapshot >= pw.w.opts.SnapshotEvery {
		pw.snapshot(ctx)
	}
	return e, nil
}

// snapshot stores every entry so far in one object, so that readers need
// not read them one by one, and removes older snapshots. It is only an
// optimization: a failure leaves readers reading more entries.
func (pw *PartitionWriter) snapshot(ctx context.Context) {
	data, err := json.Marshal(Snapshot{Seq: pw.seq, Entries: pw.entries})
	if err != nil {
		return
	}
	store := pw.w.store
	if err := store.Put(ctx, SnapshotKey(pw.prefix, pw.seq), bytes.NewReader(data), int64(len(data)), PutOptions{IfAbsent: true}); err != nil {
		return
	}
	pw.sinceSnapshot = 0
	old, err := ListAll(ctx, store, SnapshotsPrefix(pw.prefix), "")
	if err != nil {
		return
	}
	// Keep the one before the newest too: a reader may be reading it.
	for i := 0; i < len(old)-2; i++ {
		store.Delete(ctx, old[i].Key)
	}
}

// fence commits a fence entry: the writer before, whose lease expired, can
// commit nothing after it. Should that writer commit at the very seq
// meanwhile, its entry stands and the fence goes after it.
func (pw *PartitionWriter) fence(ctx context.Context) error {
	for {
		_, err := pw.put(ctx, Entry{Kind: KindFence, MinOffset: -1, MaxOffset: -1, NextOffset: pw.next})
		if !errors.Is(err, ErrExists) {
			return err
		}
		m, err := (&Backup{store: pw.w.store, keys: pw.w.keys}).Manifest(ctx, pw.topic, pw.partition)
		if err != nil {
			return err
		}
		pw.seq, pw.next, pw.entries = m.LastSeq, m.NextOffset(), m.Entries
	}
}

// Gap records that the offsets [from, to) will never be in the backup, and
// why.
func (pw *PartitionWriter) Gap(ctx context.Context, from, to int64, reason, topicID string) (Entry, error) {
	return pw.commit(ctx, Entry{Kind: KindGap, TopicID: topicID, MinOffset: from, MaxOffset: to - 1, NextOffset: to, Reason: reason})
}

// Segment streams frames into a new segment object as they come: memory
// stays bounded by one frame. Nothing of it counts until Commit.
type Segment struct {
	pw      *PartitionWriter
	ctx     context.Context
	codec   record.Codec
	enc     *record.Encoder
	scratch []byte
	sealed  []byte // the last frame, encrypted
	started time.Time

	key   string
	out   *io.PipeWriter
	put   chan error
	crc   uint32
	size  int64
	entry Entry
}

// Codec is the compression of the segment's frames.
func (s *Segment) Codec() record.Codec { return s.codec }

// Records is how many records the segment holds so far.
func (s *Segment) Records() int64 { return s.entry.Records }

// Size is how many bytes the segment holds so far.
func (s *Segment) Size() int64 { return s.size }

// Age is how long ago the segment was started.
func (s *Segment) Age() time.Duration { return time.Since(s.started) }

// start begins the segment's object, named after its first offset.
func (s *Segment) start(base int64) error {
	pr, pw := io.Pipe()
	s.key, s.out, s.put = SegmentKey(s.pw.prefix, base, s.pw.w.Epoch(), s.pw.incarnation), pw, make(chan error, 1)
	go func() {
		err := s.pw.w.store.Put(s.ctx, s.key, pr, -1, PutOptions{})
		pr.CloseWithError(err) // unblock the writer if the store gave up
		s.put <- err
	}()
	return s.write(record.SchemaFrame())
}

func (s *Segment) write(b []byte) error {
	if _, err := s.out.Write(b); err != nil {
		return fmt.Errorf("write segment %s: %w", s.key, err)
	}
	s.crc = crc32.Update(s.crc, castagnoli, b)
	s.size += int64(len(b))
	return nil
}

// WriteFrame appends a frame with the bounds of its records; nextOffset is
// the source position after it and maxRecordBytes the size of its largest
// record (0 when unknown). A frame of another codec is recompressed first,
// without decoding its records. A batch without records only moves the
// position.
func (s *Segment) WriteFrame(frame []byte, b record.Bounds, nextOffset, maxRecordBytes int64) error {
	e := &s.entry
	if b.Count == 0 {
		e.NextOffset = max(e.NextOffset, nextOffset)
		return nil
	}
	info, err := record.Inspect(frame)
	if err != nil {
		return fmt.Errorf("write segment: %w", err)
	}
	if info.Rows != b.Count {
		return fmt.Errorf("write segment: the frame holds %d records, its bounds count %d", info.Rows, b.Count)
	}
	if info.Codec != s.codec.Base() {
		if s.scratch, err = s.enc.Recompress(frame, s.scratch[:0]); err != nil {
			return fmt.Errorf("write segment: %w", err)
		}
		frame = s.scratch
	}
	if s.out == nil {
		if err := s.start(b.MinOffset); err != nil {
			return err
		}
	}
	start := s.size
	if k := s.pw.w.opts.Key; k != nil {
		s.sealed = k.seal(s.sealed[:0], frame, batchAD(s.pw.w.keys.ID, s.pw.topic, s.pw.partition, s.name(), start))
		frame = s.sealed
	}
	if err := s.write(frame); err != nil {
		return err
	}
	e.Batches = append(e.Batches, BatchIndex{Start: start, Length: int64(len(frame)), Records: b.Count,
		MinOffset: b.MinOffset, MaxOffset: b.MaxOffset, MinTimestamp: b.MinTimestamp, MaxTimestamp: b.MaxTimestamp,
		MaxRecordBytes: maxRecordBytes, CRC: crc32.Checksum(frame, castagnoli)})
	if e.Records == 0 {
		e.MinOffset, e.MaxOffset = b.MinOffset, b.MaxOffset
		e.MinTimestamp, e.MaxTimestamp = b.MinTimestamp, b.MaxTimestamp
	}
	e.Records += b.Count
	e.Uncompressed += info.Size
	e.MinOffset = min(e.MinOffset, b.MinOffset)
	e.MaxOffset = max(e.MaxOffset, b.MaxOffset)
	e.MinTimestamp = min(e.MinTimestamp, b.MinTimestamp)
	e.MaxTimestamp = max(e.MaxTimestamp, b.MaxTimestamp)
	e.NextOffset = max(e.NextOffset, nextOffset, e.MaxOffset+1)
	return nil
}

// Write encodes a record batch in the segment's codec and appends it, as
// WriteFrame does.
func (s *Segment) Write(rec arrow.RecordBatch, b record.Bounds, nextOffset int64) error {
	if b.Count == 0 {
		return s.WriteFrame(nil, b, nextOffset, 0)
	}
	v, err := record.NewView(rec)
	if err != nil {
		return err
	}
	var largest int64
	for i := range v.Len() {
		largest = max(largest, v.RecordBytes(i))
	}
	frame, err := s.enc.Encode(rec, s.scratch[:0])
	if err != nil {
		return fmt.Errorf("write segment: %w", err)
	}
	s.scratch = frame
	return s.WriteFrame(frame, b, nextOffset, largest)
}

// Commit ends the segment's object and commits it: from then on its records
// count, and the partition's position is past them.
func (s *Segment) Commit(topicID string) (Entry, error) {
	if s.out == nil {
		return Entry{}, errors.New("commit segment: it holds no records")
	}
	if err := s.write(record.EndOfStream); err != nil {
		s.Abort()
		return Entry{}, err
	}
	s.out.Close()
	if err := <-s.put; err != nil {
		return Entry{}, fmt.Errorf("commit segment %s: %w", s.key, err)
	}
	e := s.entry
	e.Kind, e.TopicID = KindSegment, topicID
	e.Segment = s.name()
	e.Size, e.Checksum, e.Compression = s.size, FormatChecksum(s.crc), string(s.codec)
	if k := s.pw.w.opts.Key; k != nil {
		e.Encryption, e.KeyID = Cipher, k.ID
	}
	return s.pw.commit(s.ctx, e)
}

// name is the segment's key relative to its partition.
func (s *Segment) name() string { return strings.TrimPrefix(s.key, s.pw.prefix) }

// Abort drops the segment: its object is never made.
func (s *Segment) Abort() {
	if s.out == nil {
		return
	}
	s.out.CloseWithError(errors.New("segment aborted"))
	<-s.put
	s.out = nil
}
