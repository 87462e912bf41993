package storage

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/record"
)

// The validator: every storage's backups are checked by this one code,
// in the storage plugin's process, so that no segment byte crosses to the
// host. A plain validation reads the manifests and one listing of the
// backup's objects; a deep one also reads every segment once, front to
// back. The JSON of Report is what `kpipe validate --format json` prints;
// fields are only ever added, and check names never change.

// Checks, as Problem.Check names them.
const (
	CheckMetadata         = "metadata"           // the topics' metadata cannot be read
	CheckPartitionMissing = "partition_unlisted" // objects of a partition the metadata does not list
	CheckManifest         = "manifest"           // an entry or snapshot cannot be read
	CheckEntryMissing     = "entry_missing"      // an entry object is gone
	CheckEntryMismatch    = "entry_mismatch"     // an entry differs from the snapshot's copy of it
	CheckContinuity       = "offset_continuity"  // an entry does not start where the one before ended
	CheckIndex            = "index_mismatch"     // an entry's index disagrees with itself or with the records
	CheckSegmentMissing   = "segment_missing"    // a committed segment's object is gone
	CheckSegmentSize      = "segment_size"       // a segment's object is not the size its entry recorded
	CheckUnknownObject    = "unknown_object"     // an object no entry or format rule accounts for
	CheckChecksum         = "checksum"           // bytes differ from their CRC-32C
	CheckSegmentFormat    = "segment_format"     // a segment is not a whole Arrow IPC stream
	CheckDecrypt          = "decrypt"            // a batch does not decrypt with the backup's key
	CheckDecode           = "decode"             // a batch does not decode
	CheckStale            = "stale"              // the last commit is older than the maximum age
	// NoteLeftover (a note, not a problem) is a segment a run wrote but
	// never committed, because it died first: not part of the backup, and
	// the next run does not need it.
	NoteLeftover = "uncommitted_leftover"
)

// Problem is one thing wrong with a backup, and where.
type Problem struct {
	Check     string `json:"check"`
	Topic     string `json:"topic,omitempty"`
	Partition *int32 `json:"partition,omitempty"`
	TopicID   string `json:"topic_id,omitempty"`
	// Segment is the segment's name within its partition.
	Segment string `json:"segment,omitempty"`
	// Object is the object's key below the backup, when one is at fault.
	Object string `json:"object,omitempty"`
	// FromOffset and ToOffset (inclusive) are the offsets concerned.
	FromOffset *int64 `json:"from_offset,omitempty"`
	ToOffset   *int64 `json:"to_offset,omitempty"`
	Message    string `json:"message"`
}

// Report is the outcome of validating a backup.
type Report struct {
	BackupID  string    `json:"backup_id"`
	Deep      bool      `json:"deep"`
	Valid     bool      `json:"valid"`
	CheckedAt time.Time `json:"checked_at"`
	// MaxAge is the maximum age asked for ("" for none).
	MaxAge         string     `json:"max_age,omitempty"`
	LastRun        RunState   `json:"last_run"`
	LastCommit     *time.Time `json:"last_commit,omitempty"`
	EarliestRecord *Instant   `json:"earliest_record,omitempty"`
	LatestRecord   *Instant   `json:"latest_record,omitempty"`
	Checked        Checked    `json:"checked"`
	// Partitions sums up each partition (of each topic incarnation).
	Partitions []PartitionReport `json:"partitions"`
	Problems   []Problem         `json:"problems"`
	// Notes are findings that do not make the backup invalid.
	Notes []Problem `json:"notes,omitempty"`
}

// Checked counts what a validation went through.
type Checked struct {
	Partitions int64 `json:"partitions"`
	Entries    int64 `json:"entries"`
	Segments   int64 `json:"segments"`
	// Records and BytesRead are those of the segments read (deep only).
	Records   int64 `json:"records"`
	BytesRead int64 `json:"bytes_read"`
}

// PartitionReport is one partition of one topic incarnation.
type PartitionReport struct {
	Topic   string `json:"topic"`
	TopicID string `json:"topic_id,omitempty"`
	PartitionDescription
}

// ErrNeedsKey is why a deep validation of an encrypted backup needs its
// key.
var ErrNeedsKey = errors.New("give its key (encryption_key_file or encryption_key_env): a deep validation decrypts every batch")

// Validate checks backup id of store; key decrypts an encrypted backup's
// segments (a deep validation needs it). A backup with problems is no
// error: the report lists them. progress, when set, hears how far it got.
func Validate(ctx context.Context, store BlobStore, id string, key *Key, o sdk.ValidateOptions, progress func(sdk.ValidateProgress)) (*Report, error) {
	b, err := OpenBackup(ctx, store, id)
	if err != nil {
		return nil, err
	}
	if o.Deep && b.Encrypted() && key == nil {
		return nil, sdk.BadRequest(fmt.Errorf("backup %q is encrypted (key %s): %w", id, b.Info.Encryption.KeyID, ErrNeedsKey))
	}
	if key != nil {
		if err := b.UseKey(key); err != nil {
			return nil, sdk.BadRequest(err)
		}
	}
	rep, _, err := validate(ctx, b, o, nil, progress)
	return rep, err
}

// ValidateSelected validates only the partitions of backup b (opened, with
// its key in use) that sel selects, all their segments whatever the
// window: what a restore of sel reads is whole and, deep, intact. It
// returns their manifests too, read once for both.
func ValidateSelected(ctx context.Context, b *Backup, deep bool, sel Selection) (*Report, map[sdk.TopicPartition]Manifest, error) {
	rep, s, err := validate(ctx, b, sdk.ValidateOptions{Deep: deep}, sel.Wants, nil)
	if err != nil {
		return nil, nil, err
	}
	manifests := map[sdk.TopicPartition]Manifest{}
	for _, ps := range s.wanted(sel.Wants) {
		if ps.err == nil {
			manifests[sdk.TopicPartition{Topic: ps.topic, Partition: ps.partition}] = ps.manifest
		}
	}
	return rep, manifests, nil
}

// validate validates the partitions of b that want selects (all when nil),
// and returns its scan of them.
func validate(ctx context.Context, b *Backup, o sdk.ValidateOptions, want func(topic string, partition int32) bool, progress func(sdk.ValidateProgress)) (*Report, *scan, error) {
	id := b.keys.ID
	s, err := scanBackup(ctx, b, want)
	if err != nil {
		return nil, nil, err
	}
	v := &validator{b: b, s: s, deep: o.Deep, progress: progress,
		rep: &Report{BackupID: id, Deep: o.Deep, CheckedAt: time.Now().UTC(), LastRun: runState(s.leases, alive),
			Partitions: []PartitionReport{}, Problems: []Problem{}}}
	if s.metaOK != nil {
		v.problem(Problem{Check: CheckMetadata, Message: s.metaOK.Error()})
		return v.done(o), s, nil
	}
	objs, err := ListAll(ctx, b.store, id+"/", "")
	if err != nil {
		return nil, nil, fmt.Errorf("backup %q: list its objects: %w", id, err)
	}
	byPart := v.sortObjects(objs)
	parts := s.wanted(want)
	v.total = int64(len(parts))
	n := scanConcurrency
	if o.Deep {
		n = deepConcurrency
	}
	err = forEach(ctx, n, parts, func(ps *partScan) error {
		v.partition(ctx, ps, byPart[ps.prefix])
		v.partsDone.Add(1)
		v.report()
		return ctx.Err()
	})
	if err != nil {
		return nil, nil, err
	}
	return v.done(o), s, nil
}

// deepConcurrency is how many partitions a deep validation reads at once.
const deepConcurrency = 4

type validator struct {
	b        *Backup
	s        *scan
	deep     bool
	progress func(sdk.ValidateProgress)

	mu  sync.Mutex
	rep *Report

	total                                                int64
	partsDone, entriesRead, segments, bytesRead, records atomic.Int64
}

func (v *validator) report() {
	if v.progress != nil {
		v.progress(sdk.ValidateProgress{PartitionsDone: v.partsDone.Load(), Partitions: v.total,
			SegmentsChecked: v.segments.Load(), BytesRead: v.bytesRead.Load(), RecordsChecked: v.records.Load()})
	}
}

func (v *validator) problem(p Problem) {
	v.mu.Lock()
	v.rep.Problems = append(v.rep.Problems, p)
	v.mu.Unlock()
}

func (v *validator) note(p Problem) {
	v.mu.Lock()
	v.rep.Notes = append(v.rep.Notes, p)
	v.mu.Unlock()
}

// done orders the report, adds the age check and gives the verdict.
func (v *validator) done(o sdk.ValidateOptions) *Report {
	r := v.rep
	r.Checked = Checked{Partitions: v.partsDone.Load(), Entries: v.entriesRead.Load(), Segments: v.segments.Load(),
		Records: v.records.Load(), BytesRead: v.bytesRead.Load()}
	slices.SortFunc(r.Partitions, func(a, b PartitionReport) int {
		return cmpParts(a.Topic, a.Partition, b.Topic, b.Partition)
	})
	for _, p := range r.Partitions {
		r.LastCommit = latest(r.LastCommit, p.LastCommit)
		r.EarliestRecord = widen(r.EarliestRecord, p.EarliestRecord, false)
		r.LatestRecord = widen(r.LatestRecord, p.LatestRecord, true)
	}
	if o.MaxAge > 0 {
		r.MaxAge = o.MaxAge.String()
		switch {
		case r.LastCommit == nil:
			r.Problems = append(r.Problems, Problem{Check: CheckStale, Message: fmt.Sprintf("the backup has no commit, and a maximum age of %s was asked", o.MaxAge)})
		case r.CheckedAt.Sub(*r.LastCommit) > o.MaxAge:
			r.Problems = append(r.Problems, Problem{Check: CheckStale, Message: fmt.Sprintf("the last commit was at %s, %s ago: older than the maximum age %s (the backup's last run is %s)",
				r.LastCommit.UTC().Format(time.RFC3339), r.CheckedAt.Sub(*r.LastCommit).Round(time.Second), o.MaxAge, strings.ReplaceAll(r.LastRun.State, "_", " "))})
		}
	}
	for _, list := range [][]Problem{r.Problems, r.Notes} {
		slices.SortStableFunc(list, func(a, b Problem) int {
			pa, pb := int32(-1), int32(-1)
			if a.Partition != nil {
				pa = *a.Partition
			}
			if b.Partition != nil {
				pb = *b.Partition
			}
			return cmpParts(a.Topic, pa, b.Topic, pb)
		})
	}
	r.Valid = len(r.Problems) == 0
	return r
}

func cmpParts(ta string, pa int32, tb string, pb int32) int {
	if c := strings.Compare(ta, tb); c != 0 {
		return c
	}
	return int(pa) - int(pb)
}

// sortObjects files the backup's objects by partition prefix and reports
// those that belong nowhere.
func (v *validator) sortObjects(objs []Object) map[string][]Object {
	known := map[string]bool{}
	for _, ps := range v.s.parts {
		known[ps.prefix] = true
	}
	keys := v.b.keys
	byPart := map[string][]Object{}
	unlisted := map[string]int{}
	for _, o := range objs {
		switch rel := strings.TrimPrefix(o.Key, keys.ID+"/"); {
		case o.Key == keys.Info():
		case strings.HasPrefix(o.Key, keys.LeasePrefix()), strings.HasPrefix(o.Key, keys.MetadataPrefix()):
			if _, err := parseNum(o.Key); err != nil {
				v.problem(Problem{Check: CheckUnknownObject, Object: rel, Message: fmt.Sprintf("object %s is not one a backup holds", rel)})
			}
		case strings.HasPrefix(rel, "topics/"):
			prefix := o.Key[:strings.LastIndexByte(o.Key, '/')+1]
			if !known[prefix] {
				if unlisted[prefix]++; unlisted[prefix] == 1 {
					where := strings.TrimSuffix(strings.TrimPrefix(prefix, keys.ID+"/topics/"), "/")
					v.problem(Problem{Check: CheckPartitionMissing, Object: strings.TrimPrefix(prefix, keys.ID+"/"),
						Message: fmt.Sprintf("objects of partition %s are stored, but the backup's metadata does not list it: a restore would not read them", where)})
				}
				continue
			}
			byPart[prefix] = append(byPart[prefix], o)
		default:
			v.problem(Problem{Check: CheckUnknownObject, Object: rel, Message: fmt.Sprintf("object %s is not one a backup holds", rel)})
		}
	}
	return byPart
}

// partition checks one partition: its manifest against its objects, the
// entries' continuity and indexes, and with deep its segments.
func (v *validator) partition(ctx context.Context, ps *partScan, objs []Object) {
	at := func(p Problem) Problem {
		part := ps.partition
		p.Topic, p.Partition = ps.topic, &part
		return p
	}
	entries := v.entries(ctx, ps, objs, at)
	v.continuity(entries, at)
	segs := map[string]Object{}
	for _, o := range objs {
		name := strings.TrimPrefix(o.Key, ps.prefix)
		if strings.HasPrefix(name, "segment-") {
			segs[name] = o
		}
	}
	named := map[string]bool{}
	for _, e := range entries {
		if e.Kind != KindSegment {
			continue
		}
		named[e.Segment] = true
		v.segments.Add(1)
		from, to := e.MinOffset, e.MaxOffset
		obj, ok := segs[e.Segment]
		switch {
		case !ok:
			v.problem(at(Problem{Check: CheckSegmentMissing, TopicID: e.TopicID, Segment: e.Segment, FromOffset: &from, ToOffset: &to,
				Message: fmt.Sprintf("segment %s is missing: its %d records (offsets %d to %d) are lost", e.Segment, e.Records, from, to)}))
			continue
		case obj.Size != e.Size:
			v.problem(at(Problem{Check: CheckSegmentSize, TopicID: e.TopicID, Segment: e.Segment, FromOffset: &from, ToOffset: &to,
				Message: fmt.Sprintf("segment %s holds %d bytes, its entry recorded %d: it was cut short or altered", e.Segment, obj.Size, e.Size)}))
		}
		if msg := v.encryptionFault(e); msg != "" {
			v.problem(at(Problem{Check: CheckDecrypt, TopicID: e.TopicID, Segment: e.Segment, FromOffset: &from, ToOffset: &to, Message: msg}))
			continue
		}
		if v.deep {
			v.segment(ctx, ps, e, at)
			v.report()
		}
	}
	for name, o := range segs {
		if named[name] {
			continue
		}
		rel := strings.TrimPrefix(o.Key, v.b.keys.ID+"/")
		sn, ok := parseSegmentName(name)
		if l, known := v.s.leases[sn.epoch]; ok && known && !l.Released {
			v.note(at(Problem{Check: NoteLeftover, Segment: name, Object: rel,
				Message: fmt.Sprintf("segment %s was written by run %d, which ended without committing it (killed or failed): it is not part of the backup", name, sn.epoch)}))
			continue
		}
		p := Problem{Check: CheckUnknownObject, Segment: name, Object: rel,
			Message: fmt.Sprintf("segment %s is named by no manifest entry, and no unfinished run explains it: its entry was lost, or something else put it there", name)}
		if ok {
			p.FromOffset = &sn.base
			p.Message = fmt.Sprintf("segment %s is named by no manifest entry, and the run that wrote it (%d) ended cleanly: its entry was lost (records from offset %d on are not restorable), or something else put it there", name, sn.epoch, sn.base)
		}
		v.problem(at(p))
	}
	for _, o := range objs {
		name := strings.TrimPrefix(o.Key, ps.prefix)
		if !strings.HasPrefix(name, "segment-") && !strings.HasPrefix(name, "entry-") && !strings.HasPrefix(name, "snapshot-") {
			v.problem(at(Problem{Check: CheckUnknownObject, Object: strings.TrimPrefix(o.Key, v.b.keys.ID+"/"),
				Message: fmt.Sprintf("object %s is not one a backup holds", name)}))
		}
	}
	incs := v.s.incarnations(ps.topic)
	for _, inc := range incs {
		mine := entries
		if len(incs) > 1 && inc.ID != (sdk.TopicID{}) {
			mine = Manifest{Entries: entries}.Of(inc.ID.String()).Entries
		}
		if ps.partition >= inc.Partitions && len(mine) == 0 {
			continue
		}
		pr := PartitionReport{Topic: ps.topic, PartitionDescription: summarize(ps.partition, mine)}
		if inc.ID != (sdk.TopicID{}) {
			pr.TopicID = inc.ID.String()
		}
		v.mu.Lock()
		v.rep.Partitions = append(v.rep.Partitions, pr)
		v.mu.Unlock()
	}
}

// encryptionFault says what is wrong with how a segment's entry says it
// is encrypted, given the backup's; "" for nothing.
func (v *validator) encryptionFault(e Entry) string {
	enc := v.b.Info.Encryption
	switch {
	case enc == nil && e.Encryption != "":
		return fmt.Sprintf("segment %s says it is encrypted (%s, key %s), but the backup is not: its entry was altered", e.Segment, e.Encryption, e.KeyID)
	case enc == nil:
		return ""
	case e.Encryption == "":
		return fmt.Sprintf("segment %s is not encrypted, but the backup is: its entry was altered", e.Segment)
	case e.Encryption != enc.Cipher || e.KeyID != enc.KeyID:
		return fmt.Sprintf("segment %s is encrypted with %s, key %s, but the backup with %s, key %s: its entry was altered", e.Segment, e.Encryption, e.KeyID, enc.Cipher, enc.KeyID)
	}
	return ""
}

// entries reads a partition's entries leniently, the way a validator
// must: the newest readable snapshot, then every entry object after it,
// noting each that is missing or unreadable instead of stopping there.
// Deep, the entry objects the snapshot covers are read too, and compared.
func (v *validator) entries(ctx context.Context, ps *partScan, objs []Object, at func(Problem) Problem) []Entry {
	present := map[int64]Object{}
	var snaps []Object
	for _, o := range objs {
		name := strings.TrimPrefix(o.Key, ps.prefix)
		switch {
		case strings.HasPrefix(name, "entry-"):
			if seq, err := parseNum(name); err == nil {
				present[seq] = o
			}
		case strings.HasPrefix(name, "snapshot-"):
			snaps = append(snaps, o)
		}
	}
	var snap Snapshot
	snap.Seq = -1
	for i := len(snaps) - 1; i >= 0; i-- {
		data, err := readObject(ctx, v.b.store, snaps[i].Key)
		if err == nil {
			err = json.Unmarshal(data, &snap)
		}
		if err == nil {
			break
		}
		v.problem(at(Problem{Check: CheckManifest, Object: strings.TrimPrefix(snaps[i].Key, v.b.keys.ID+"/"),
			Message: fmt.Sprintf("snapshot %s cannot be read: %v", strings.TrimPrefix(snaps[i].Key, ps.prefix), err)}))
		snap = Snapshot{Seq: -1}
	}
	inSnap := map[int64]Entry{}
	for _, e := range snap.Entries {
		inSnap[e.Seq] = e
	}
	var out []Entry
	out = append(out, snap.Entries...)
	// The entry objects in order, each run of missing ones before them
	// reported as one: a name or a snapshot that claims a huge seq costs
	// one problem, not one per number.
	next := int64(0)
	for _, seq := range slices.Sorted(maps.Keys(present)) {
		if seq > next {
			v.missingEntries(ps, next, seq-1, snap, inSnap, at)
		}
		next = max(next, seq+1) // seq+1 overflows only past the last possible
		o := present[seq]
		if seq <= snap.Seq && !v.deep {
			continue
		}
		v.entriesRead.Add(1)
		data, err := readObject(ctx, v.b.store, o.Key)
		var e Entry
		if err == nil {
			if err = json.Unmarshal(data, &e); err == nil && e.Seq != seq {
				err = fmt.Errorf("it says seq %d", e.Seq)
			}
		}
		name := strings.TrimPrefix(o.Key, ps.prefix)
		if err != nil {
			v.problem(at(Problem{Check: CheckManifest, Object: strings.TrimPrefix(o.Key, v.b.keys.ID+"/"),
				Message: fmt.Sprintf("entry %s cannot be read: %v", name, err)}))
			continue
		}
		if seq <= snap.Seq {
			if s, ok := inSnap[seq]; (ok || e.Kind != KindFence) && !sameEntry(s, e) {
				v.problem(at(Problem{Check: CheckEntryMismatch, Segment: e.Segment, Object: strings.TrimPrefix(o.Key, v.b.keys.ID+"/"),
					Message: fmt.Sprintf("entry %s differs from the copy in snapshot %d, which readers go by", name, snap.Seq)}))
			}
			continue
		}
		if e.Kind != KindFence {
			out = append(out, e)
		}
	}
	if snap.Seq >= next {
		v.missingEntries(ps, next, snap.Seq, snap, inSnap, at)
	}
	return out
}

// missingEntries reports the missing entry objects from to to, saying what
// is lost: those the snapshot covers one by one while they are few, and
// any longer run as one problem.
func (v *validator) missingEntries(ps *partScan, from, to int64, snap Snapshot, inSnap map[int64]Entry, at func(Problem) Problem) {
	const oneByOne = 16
	if covered := min(to, snap.Seq); from <= covered {
		if covered-from < oneByOne {
			for seq := from; seq <= covered; seq++ {
				v.missingEntry(ps, seq, seq, snap, inSnap, at)
			}
		} else {
			v.missingEntry(ps, from, covered, snap, inSnap, at)
		}
		from = covered + 1
	}
	if from <= to && from > snap.Seq {
		v.missingEntry(ps, from, to, snap, inSnap, at)
	}
}

// missingEntry reports missing entry objects from to to (one when they are
// the same), saying what is lost.
func (v *validator) missingEntry(ps *partScan, from, to int64, snap Snapshot, inSnap map[int64]Entry, at func(Problem) Problem) {
	name := fmt.Sprintf("entry-%s", num(from))
	what := name + " is"
	if to > from {
		what = fmt.Sprintf("entries %s to entry-%s (%d objects) are", name, num(to), uint64(to-from)+1)
	}
	p := Problem{Check: CheckEntryMissing, Object: strings.TrimPrefix(ps.prefix, v.b.keys.ID+"/") + name}
	if to <= snap.Seq {
		if e, ok := inSnap[from]; ok && to == from {
			p.Segment = e.Segment
		}
		lost := "objects"
		if to == from {
			lost = "an object"
		}
		p.Message = fmt.Sprintf("%s missing; snapshot %d still holds a copy, so no records are lost, but the store lost %s", what, snap.Seq, lost)
		v.problem(at(p))
		return
	}
	p.Message = fmt.Sprintf("%s missing: what it committed is not restorable, and readers stop before it", what)
	v.problem(at(p))
}

// sameEntry compares what readers use of two copies of an entry.
func sameEntry(a, b Entry) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// continuity checks that each entry starts where the one before of its
// incarnation ended, and that each is whole in itself.
func (v *validator) continuity(entries []Entry, at func(Problem) Problem) {
	var prev *Entry
	cur := ""
	for i := range entries {
		e := &entries[i]
		if e.TopicID != "" && e.TopicID != cur {
			if cur != "" {
				prev = nil // a new incarnation starts over
			}
			cur = e.TopicID
		}
		if prev != nil && e.FromOffset != prev.NextOffset {
			from, to := prev.NextOffset, e.FromOffset-1
			msg := fmt.Sprintf("entry %d starts at offset %d, but the entry before (%d) ended at %d: the entries between are lost (offsets %d to %d)", e.Seq, e.FromOffset, prev.Seq, prev.NextOffset, from, to)
			if e.FromOffset < prev.NextOffset {
				from, to = e.FromOffset, prev.NextOffset-1
				msg = fmt.Sprintf("entry %d starts at offset %d, before the entry before (%d) ended (%d): offsets %d to %d are stored twice", e.Seq, e.FromOffset, prev.Seq, prev.NextOffset, from, to)
			}
			v.problem(at(Problem{Check: CheckContinuity, TopicID: e.TopicID, Segment: e.Segment, FromOffset: &from, ToOffset: &to, Message: msg}))
		}
		for _, msg := range entryFaults(*e) {
			from, to := e.MinOffset, e.MaxOffset
			v.problem(at(Problem{Check: CheckIndex, TopicID: e.TopicID, Segment: e.Segment, FromOffset: &from, ToOffset: &to,
				Message: fmt.Sprintf("entry %d: %s", e.Seq, msg)}))
		}
		prev = e
	}
}

// entryFaults lists what is inconsistent within one entry: its bounds and
// its batch index.
func entryFaults(e Entry) []string {
	var out []string
	bad := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	switch e.Kind {
	case KindGap:
		if e.MinOffset > e.MaxOffset || e.NextOffset != e.MaxOffset+1 {
			bad("gap of offsets %d to %d, next offset %d: not a range", e.MinOffset, e.MaxOffset, e.NextOffset)
		}
		return out
	case KindSegment:
	default:
		bad("unknown kind %q", e.Kind)
		return out
	}
	if e.Records <= 0 || e.MinOffset > e.MaxOffset || e.MinOffset < e.FromOffset || e.NextOffset <= e.MaxOffset || e.MaxOffset-e.MinOffset+1 < e.Records {
		bad("%d records in offsets %d to %d, from %d, next %d: the bounds do not hold together", e.Records, e.MinOffset, e.MaxOffset, e.FromOffset, e.NextOffset)
	}
	if len(e.Batches) == 0 {
		bad("the batch index is empty")
		return out
	}
	var sum record.Bounds
	var records int64
	end := e.Batches[0].Start
	for i, bi := range e.Batches {
		if bi.Start != end || bi.Length <= 0 {
			bad("batch %d at bytes %d+%d does not follow the batch before (which ends at %d)", i, bi.Start, bi.Length, end)
		}
		if bi.Records <= 0 || bi.MinOffset > bi.MaxOffset || bi.MaxOffset-bi.MinOffset+1 < bi.Records {
			bad("batch %d: %d records in offsets %d to %d", i, bi.Records, bi.MinOffset, bi.MaxOffset)
		}
		if i > 0 && bi.MinOffset <= e.Batches[i-1].MaxOffset {
			bad("batch %d starts at offset %d, not after the batch before (%d)", i, bi.MinOffset, e.Batches[i-1].MaxOffset)
		}
		end = bi.Start + bi.Length
		records += bi.Records
		b := bi.Bounds()
		b.Count = 0
		if i == 0 {
			sum = b
		} else {
			sum.MinOffset, sum.MaxOffset = min(sum.MinOffset, b.MinOffset), max(sum.MaxOffset, b.MaxOffset)
			sum.MinTimestamp, sum.MaxTimestamp = min(sum.MinTimestamp, b.MinTimestamp), max(sum.MaxTimestamp, b.MaxTimestamp)
		}
	}
	if records != e.Records {
		bad("the batch index counts %d records, the entry %d", records, e.Records)
	}
	if sum.MinOffset != e.MinOffset || sum.MaxOffset != e.MaxOffset || sum.MinTimestamp != e.MinTimestamp || sum.MaxTimestamp != e.MaxTimestamp {
		bad("the batch index spans offsets %d to %d and timestamps %d to %d, the entry %d to %d and %d to %d",
			sum.MinOffset, sum.MaxOffset, sum.MinTimestamp, sum.MaxTimestamp, e.MinOffset, e.MaxOffset, e.MinTimestamp, e.MaxTimestamp)
	}
	if end+int64(len(record.EndOfStream)) > e.Size {
		bad("the batch index reaches byte %d, past the segment's %d bytes", end, e.Size)
	}
	return out
}

// maxSchemaFrame bounds the bytes before a segment's first batch: its
// schema frame is a few hundred bytes.
const maxSchemaFrame = 64 << 10

// segment reads one segment front to back: the schema frame, each batch
// (checksum, decryption, decoding, and its records against the index),
// the end-of-stream marker, and the whole object's checksum.
func (v *validator) segment(ctx context.Context, ps *partScan, e Entry, at func(Problem) Problem) {
	bad := func(check string, from, to int64, format string, args ...any) {
		v.problem(at(Problem{Check: check, TopicID: e.TopicID, Segment: e.Segment, FromOffset: &from, ToOffset: &to,
			Message: fmt.Sprintf("segment %s: ", e.Segment) + fmt.Sprintf(format, args...)}))
	}
	if len(e.Batches) == 0 {
		return // entryFaults said so
	}
	rc, err := v.b.store.Get(ctx, ps.prefix+e.Segment, 0, -1)
	if err != nil {
		if !errors.Is(err, ErrNotFound) {
			bad(CheckSegmentMissing, e.MinOffset, e.MaxOffset, "cannot be read: %v", err)
		}
		return
	}
	defer rc.Close()
	sum := crc32.New(castagnoli)
	r := &countingReader{r: bufio.NewReaderSize(rc, 256<<10), h: sum}
	defer func() { v.bytesRead.Add(r.n) }()

	head := e.Batches[0].Start
	if head <= 0 || head > maxSchemaFrame {
		bad(CheckSegmentFormat, e.MinOffset, e.MaxOffset, "its first batch is indexed at byte %d, where no schema frame ends", head)
		return
	}
	buf := make([]byte, head)
	if _, err := io.ReadFull(r, buf); err != nil {
		bad(CheckSegmentFormat, e.MinOffset, e.MaxOffset, "it ends at byte %d, inside its schema frame", r.n)
		return
	}
	if err := record.CheckSchemaFrame(buf); err != nil {
		bad(CheckSegmentFormat, e.MinOffset, e.MaxOffset, "its schema frame is damaged: %v", err)
	}
	var crypt *Key
	if e.Encryption != "" {
		crypt = v.b.key
	}
	var plain []byte
	var uncompressed int64
	damaged := false // a batch is: the sums over all of them add nothing
	for i, bi := range e.Batches {
		if bi.Start != r.n || bi.Length <= 0 || bi.Length > e.Size-r.n {
			return // entryFaults said so; the bytes after cannot be placed
		}
		if int64(cap(buf)) < bi.Length {
			buf = make([]byte, bi.Length)
		}
		frame := buf[:bi.Length]
		if n, err := io.ReadFull(r, frame); err != nil {
			bad(CheckSegmentSize, bi.MinOffset, e.MaxOffset, "it ends at byte %d, %d bytes into batch %d (offsets %d to %d): it is cut short, and the records from offset %d on are lost",
				r.n, n, i, bi.MinOffset, bi.MaxOffset, bi.MinOffset)
			return
		}
		if got := crc32.Checksum(frame, castagnoli); got != bi.CRC {
			bad(CheckChecksum, bi.MinOffset, bi.MaxOffset, "batch %d (offsets %d to %d, bytes %d+%d) has checksum %s, its index says %s: its bytes were altered",
				i, bi.MinOffset, bi.MaxOffset, bi.Start, bi.Length, FormatChecksum(got), FormatChecksum(bi.CRC))
			damaged = true
			continue
		}
		if crypt != nil {
			if plain, err = crypt.open(plain[:0], frame, batchAD(v.b.keys.ID, ps.topic, ps.partition, e.Segment, bi.Start)); err != nil {
				bad(CheckDecrypt, bi.MinOffset, bi.MaxOffset, "batch %d (offsets %d to %d) does not decrypt: %v", i, bi.MinOffset, bi.MaxOffset, err)
				damaged = true
				continue
			}
			frame = plain
		}
		n, size, msg := checkBatch(frame, bi)
		uncompressed += size
		v.records.Add(n)
		if msg != "" {
			damaged = true
			check := CheckIndex
			if n < 0 {
				check = CheckDecode
			}
			bad(check, bi.MinOffset, bi.MaxOffset, "batch %d (offsets %d to %d): %s", i, bi.MinOffset, bi.MaxOffset, msg)
		}
	}
	tail, err := io.ReadAll(io.LimitReader(r, 1<<20))
	switch {
	case err != nil:
		bad(CheckSegmentMissing, e.MinOffset, e.MaxOffset, "reading it failed at byte %d: %v", r.n, err)
		return
	case !bytes.Equal(tail, record.EndOfStream):
		bad(CheckSegmentFormat, e.MinOffset, e.MaxOffset, "after its last batch come %d bytes, not the end-of-stream marker alone", len(tail))
	}
	if damaged {
		return
	}
	if r.n == e.Size {
		if got := FormatChecksum(sum.Sum32()); got != e.Checksum {
			bad(CheckChecksum, e.MinOffset, e.MaxOffset, "the object's checksum is %s, its entry says %s", got, e.Checksum)
		}
	}
	if e.Uncompressed > 0 && uncompressed != e.Uncompressed {
		bad(CheckIndex, e.MinOffset, e.MaxOffset, "its batches hold %d bytes decompressed, its entry says %d", uncompressed, e.Uncompressed)
	}
}

// checkBatch decodes a batch's frame and compares its records with its
// index: count, offsets ascending within the bounds, min and max offset and
// timestamp. Every key, value and header is read. It returns the records
// decoded (-1 when the frame does not decode), the decompressed size, and
// what is wrong ("" for nothing).
func checkBatch(frame []byte, bi BatchIndex) (n, size int64, msg string) {
	defer func() {
		if p := recover(); p != nil {
			n, msg = -1, fmt.Sprintf("decoding it failed: %v", p)
		}
	}()
	info, err := record.Inspect(frame)
	if err != nil {
		return -1, 0, fmt.Sprintf("it does not decode: %v", err)
	}
	v, err := record.DecodeView(frame)
	if err != nil {
		return -1, 0, fmt.Sprintf("it does not decode: %v", err)
	}
	defer v.Batch.Release()
	for i := 1; i < v.Len(); i++ {
		if v.Offset(i) <= v.Offset(i-1) {
			return int64(i), info.Size, fmt.Sprintf("record %d has offset %d, not after %d", i, v.Offset(i), v.Offset(i-1))
		}
	}
	for i := range v.Len() {
		_ = v.RecordBytes(i) // reads every key, value and header
	}
	got := v.Bounds()
	want := bi.Bounds()
	if got != want {
		return got.Count, info.Size, fmt.Sprintf("it holds %d records, offsets %d to %d, timestamps %d to %d; its index says %d records, offsets %d to %d, timestamps %d to %d",
			got.Count, got.MinOffset, got.MaxOffset, got.MinTimestamp, got.MaxTimestamp, want.Count, want.MinOffset, want.MaxOffset, want.MinTimestamp, want.MaxTimestamp)
	}
	return got.Count, info.Size, ""
}

// countingReader counts and checksums what it reads.
type countingReader struct {
	r io.Reader
	h hash.Hash32
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	return n, err
}

// validateJSON is Validate as JSON, for the storage service.
func validateJSON(ctx context.Context, store BlobStore, id string, key *Key, o sdk.ValidateOptions, progress func(sdk.ValidateProgress)) ([]byte, error) {
	r, err := Validate(ctx, store, id, key, o, progress)
	if err != nil {
		return nil, err
	}
	return json.Marshal(r)
}
