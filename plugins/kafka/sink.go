package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/param"
	"github.com/kpipe/kpipe/sdk/record"
	"github.com/kpipe/kpipe/sdk/restore"
)

type sinkConfig struct {
	BootstrapServers  []string          `param:"bootstrap_servers" required:"true" help:"Kafka brokers of the target cluster, host:port"`
	CreateTopics      bool              `param:"create_topics" default:"true" help:"create missing target topics, and add partitions when a batch names one the topic lacks"`
	TopicPartitions   map[string]int32  `param:"topic_partitions" help:"partitions of topics this sink creates, by target topic name; a topic not listed gets as many as the batches need (highest partition + 1)"`
	ReplicationFactor int               `param:"replication_factor" default:"0" help:"replication factor of created topics: 0 for the source's (the backup's), or the broker default when unknown; -1 for the broker default; a factor the cluster has too few brokers for is refused before anything is written"`
	ConnectTimeout    time.Duration     `param:"connect_timeout" default:"30s" help:"how long to wait for the cluster to answer at start"`
	TopicMapping      map[string]string `param:"topic_mapping" help:"source topic = target topic; unmapped topics keep their name"`
	PartitionMapping  map[string]int32  `param:"partition_mapping" help:"source partition = target partition, for every topic (several may merge into one: they are written one after the other, lowest first); unmapped partitions keep their number"`
	Repartitioning    map[string]string `param:"repartitioning" help:"target topic = STRATEGY:PARTITIONS, such as murmur2:6: the topic's records go to the partition Kafka's default partitioner picks for their key over that many partitions (each key's records in order in one partition), records without a key round-robin in source order; partition_mapping does not apply to it"`
	RestoreState      string            `param:"restore_state" help:"file of the restore's progress and offset map: set, the sink writes exactly once, a rerun continuing where a killed run stopped (it must be the only writer of its target partitions, and get each source partition's batches in order)"`
	AllowNonempty     bool              `param:"allow_nonempty_target" help:"with restore_state: let the restore start on target partitions that already hold records, appending after them"`
	RateRecords       int64             `param:"rate_limit_records_per_sec" help:"produce at most this many records per second, over the whole run (0: no limit)"`
	RateBytes         int64             `param:"rate_limit_bytes_per_sec" help:"produce at most this many bytes of records (keys, values and headers) per second, over the whole run (0: no limit)"`
	CheckReport       string            `param:"check_report" help:"only check: write to this file, as JSON, what a restore would find and do on the target cluster (each target topic, what would stop the restore, what it would warn of), creating and writing nothing; an unreachable cluster is reported, not an error"`
	OriginalHeaders   bool              `param:"include_original_offset_header" help:"append to each record's own headers x-original-offset, x-original-partition and x-original-timestamp: the offset, partition and timestamp (epoch milliseconds) it had in the source, as decimal text"`
}

// Sink produces batches to Kafka with an idempotent producer, partition for
// partition as the batch says. A batch is acked once every one of its
// records is acknowledged by the brokers (acks=all).
type Sink struct {
	sdk.UnimplementedSink
	cfg sinkConfig
	sec securityConfig
	off offsetsConfig
	m   restore.Mapping
	// eo keeps a restore exactly once; nil without restore_state.
	eo       *exactly
	outcome  sdk.Outcome
	stopSave chan struct{}
	saved    chan struct{}
	cl       *kgo.Client
	adm      *kadm.Client
	ack      sdk.Acker
	topo     map[string]int // partitions per target topic, as far as known
	// producing holds the topics records were produced to.
	producing map[string]bool

	// planned holds the partitions the metadata asks each topic to have,
	// configs and rfs the configs and replication factor of a topic it
	// creates; limits the batch limit of each topic.
	planned map[string]int32
	configs map[string]map[string]string
	rfs     map[string]int
	limits  batchLimits
	// fresh holds the topics this sink created, with their partitions:
	// empty, so their offsets need not be asked for.
	fresh map[string]int
	dec   *record.Decoder
	pool  *record.Pool
	// unreachable is why the cluster did not answer, with check_report.
	unreachable error
	// records and bytes pace what is produced (nil: no limit).
	records, bytes *pacer
	// nulls counts, per source partition of a repartitioned topic, the
	// records without a key sent so far (in the restore's state, up to
	// its position).
	nulls map[sdk.TopicPartition]int64

	mu          sync.Mutex
	outstanding map[sdk.BatchID]*inFlight
	err         error
	failCh      chan error // gets err, once
	produced    int64
	matched     int64 // records a resumed restore found in the target already
	created     int64
}

// inFlight is a batch whose records the producer has not all acknowledged:
// its decoded records stay alive until then.
type inFlight struct {
	id   sdk.BatchID
	n    int
	left int
	rec  arrow.RecordBatch
	view *record.View
	// With restore_state: the batch's source partition and the position
	// after it.
	src  sdk.TopicPartition
	srcT *sourceTrack
	next int64
	// fanout says the batch's topic is repartitioned: its records go to
	// several target partitions, acknowledged in no set order across them,
	// so its source partition's position moves with whole batches only.
	// nulls is then how many records without a key its source partition
	// sent up to the batch's end.
	fanout bool
	nulls  int64
	parts  []int32 // with fanout, each record's target partition
	// outs are the target partitions the records go to: one, or with
	// fanout one per partition of the target topic (nil where none goes).
	outs []*out
}

// out is a target partition of a batch and the records produced to it, in
// order: the count records from first, or with fanout those in idx.
type out struct {
	partition int32
	tgt       *targetTrack // with restore_state
	first     int
	idx       []int32
	count     int
	acked     int
}

// add notes that record i is produced to o.
func (o *out) add(i int, fanout bool) {
	if fanout {
		o.idx = append(o.idx, int32(i))
	} else if o.count == 0 {
		o.first = i
	}
	o.count++
}

// at is the k-th record produced to o.
func (o *out) at(k int) int {
	if o.idx != nil {
		return int(o.idx[k])
	}
	return o.first + k
}

// outOf is the target partition p of the batch.
func (f *inFlight) outOf(p int32) *out {
	if !f.fanout {
		return f.outs[0]
	}
	return f.outs[p]
}

// NewSink returns the kafka sink.
func NewSink() sdk.Sink { return &Sink{} }

func (s *Sink) Spec() sdk.Spec {
	return sdk.Spec{Name: "kafka", Version: sdk.Version, Summary: "Apache Kafka topics (franz-go)", Config: param.Multi{&s.cfg, &s.sec, &s.off}}
}

func (s *Sink) Configure(context.Context) error {
	errs := append(s.sec.check(), s.off.check()...)
	if s.off.modes() > 0 && s.cfg.CheckReport != "" {
		errs = append(errs, param.Errorf("check_report", "is a mode of its own: leave out offsets_plan, offsets_execute and offsets_rollback"))
	}
	if len(s.cfg.BootstrapServers) == 0 {
		errs = append(errs, param.Errorf("bootstrap_servers", "is empty; list at least one broker, e.g. [\"127.0.0.1:9092\"]"))
	}
	var merrs param.Errors
	s.m, merrs = restore.NewMapping(s.cfg.TopicMapping, s.cfg.PartitionMapping)
	errs = append(errs, merrs...)
	s.m, merrs = s.m.WithRepartitioning(s.cfg.Repartitioning)
	errs = append(errs, merrs...)
	if s.cfg.AllowNonempty && s.cfg.RestoreState == "" {
		errs = append(errs, param.Errorf("allow_nonempty_target", "is for a restore: set restore_state too"))
	}
	for _, r := range []struct {
		name string
		n    int64
	}{{"rate_limit_records_per_sec", s.cfg.RateRecords}, {"rate_limit_bytes_per_sec", s.cfg.RateBytes}} {
		if r.n < 0 {
			errs = append(errs, param.Errorf(r.name, "%d is not a rate; use a number above 0, or 0 for no limit", r.n))
		}
	}
	s.records, s.bytes = newPacer(s.cfg.RateRecords), newPacer(s.cfg.RateBytes)
	if rf := s.cfg.ReplicationFactor; rf < -1 || rf > math.MaxInt16 {
		errs = append(errs, param.Errorf("replication_factor", "%d is not a replication factor; use 1 or more, 0 for the source's, or -1 for the broker default", rf))
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

func (s *Sink) Open(ctx context.Context, ack sdk.Acker) error {
	s.ack = ack
	s.failCh = make(chan error, 1)
	s.topo = map[string]int{}
	s.producing = map[string]bool{}
	s.outstanding = map[sdk.BatchID]*inFlight{}
	s.planned, s.configs, s.rfs, s.fresh = map[string]int32{}, map[string]map[string]string{}, map[string]int{}, map[string]int{}
	s.nulls = map[sdk.TopicPartition]int64{}
	s.pool = record.NewPoolWithLimit(sdk.InFlightBytes() / 8)
	s.dec = record.NewDecoder(s.pool)
	var err error
	s.cl, s.adm, err = connect(ctx, s.cfg.BootstrapServers, s.cfg.ConnectTimeout, &s.sec, s.fail,
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(5*time.Millisecond),
		// Batches as large as each target topic takes (max.message.bytes),
		// learnt before the first record is produced to it.
		kgo.ProducerBatchMaxBytesFn(s.limits.producerLimit),
		kgo.MetadataMinAge(10*time.Millisecond), // see new topics and partitions as soon as they exist
		// A partition just created may refuse writes for some milliseconds
		// though it has a leader: retry soon, then back off.
		kgo.RetryBackoffFn(retryBackoff),
	)
	if s.cfg.CheckReport != "" {
		s.unreachable = err
		return nil
	}
	if err != nil || s.cfg.RestoreState == "" || s.off.modes() > 0 {
		return err
	}
	if s.eo, err = loadExactly(s.cfg.RestoreState, s.cfg.AllowNonempty); err != nil {
		return err
	}
	for _, src := range s.eo.st.Sources {
		s.nulls[sdk.TopicPartition{Topic: src.Topic, Partition: src.Partition}] = src.NullKeys
	}
	cctx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout)
	defer cancel()
	if err := s.eo.catchUp(cctx, s.adm, &s.sec, s.cfg.BootstrapServers, s.cfg.ConnectTimeout); err != nil {
		return err
	}
	s.stopSave, s.saved = make(chan struct{}), make(chan struct{})
	go s.saveLoop()
	return nil
}

// retryBackoff is the wait after tries failed tries of a request (0 is
// taken as 1): 10 ms doubling up to 1 s, give or take a fifth, instead of
// the client's 250 ms to 5 s.
func retryBackoff(tries int) time.Duration {
	d := min(10*time.Millisecond<<min(max(tries-1, 0), 7), time.Second)
	return d - d/5 + time.Duration(rand.Int64N(int64(d/5)*2+1))
}

// DurablePositions implements sdk.PositionTracker: with restore_state, the
// restore resumes from the positions its state holds.
func (s *Sink) DurablePositions(context.Context) ([]sdk.Position, error) {
	if s.eo == nil {
		return nil, sdk.ErrPositionsNotTracked
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.eo.positions(), nil
}

// saveLoop saves the restore's state every saveEvery while it changes.
func (s *Sink) saveLoop() {
	defer close(s.saved)
	t := time.NewTicker(saveEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stopSave:
			return
		case <-t.C:
			if err := s.saveState(false); err != nil {
				s.fail(err)
				return
			}
		}
	}
}

// saveState saves the restore's state if it changed (or, finished, marks
// it so). The snapshot is taken while no other save runs, so that saves
// land in the order they were taken.
func (s *Sink) saveState(finished bool) error {
	s.eo.saving.Lock()
	defer s.eo.saving.Unlock()
	s.mu.Lock()
	c := s.eo.snapshot(finished)
	s.mu.Unlock()
	return s.eo.save(c)
}

// ensure makes sure topic exists with more than partition partitions,
// creating the topic or adding partitions when create_topics allows.
func (s *Sink) ensure(ctx context.Context, topic string, partition int32) error {
	if n, ok := s.topo[topic]; ok && int(partition) < n {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout)
	defer cancel()
	want := max(int(partition)+1, int(s.cfg.TopicPartitions[topic]), int(s.planned[topic]))
	have, before := 0, -1
	for changed := false; ; {
		parts, exists, err := s.partitions(ctx, topic)
		if err != nil {
			return err
		}
		if have = len(parts); before < 0 {
			before = have
		}
		// Created or grown, the topic is ready once its new partitions
		// have leaders: the producer would back off from one without.
		if (have >= want && (!changed || led(parts, before, want))) || (have > int(partition) && !changed) {
			break
		}
		if changed { // created or grown, not yet visible: wait
			select {
			case <-ctx.Done():
				return fmt.Errorf("topic %q: %d partitions not visible after creation: %w", topic, want, ctx.Err())
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		if !s.cfg.CreateTopics {
			if !exists {
				return fmt.Errorf("target topic %q does not exist; create it or set create_topics = true", topic)
			}
			return fmt.Errorf("target topic %q has %d partitions, a batch needs partition %d; add partitions or set create_topics = true", topic, have, partition)
		}
		if !exists {
			rf, ok := s.rfs[topic]
			if !ok {
				rf = s.replication(sdk.TopicMetadata{})
			}
			resp, err := s.adm.CreateTopic(ctx, int32(want), int16(rf), configPtrs(s.configs[topic]), topic)
			if err == nil {
				err = resp.Err
			}
			if errors.Is(err, kerr.TopicAlreadyExists) {
				continue // created meanwhile, maybe with fewer partitions: look again
			}
			if errors.Is(err, kerr.InvalidReplicationFactor) {
				return fmt.Errorf("create topic %q: replication factor %d is more than the cluster's brokers; lower replication_factor, or set -1 for the broker default", topic, rf)
			}
			if errors.Is(err, kerr.InvalidConfig) || errors.Is(err, kerr.PolicyViolation) {
				return fmt.Errorf("create topic %q with the backup's topic configs %v: %w; the target cluster refuses one of them", topic, s.configs[topic], err)
			}
			if err != nil {
				return fmt.Errorf("create topic %q: %w", topic, err)
			}
			s.created++
			s.fresh[topic] = want
		} else {
			resp, err := s.adm.UpdatePartitions(ctx, want, topic)
			if err == nil {
				err = resp.Error()
			}
			if err != nil {
				return fmt.Errorf("add partitions to %q: %w", topic, err)
			}
		}
		changed = true
	}
	// The producer fails a record for a partition its metadata does not know
	// yet. A topic it has produced to is in its metadata, maybe with the old
	// partition count: wait until it sees the new one. A topic it has never
	// produced to is loaded on first use, after this change.
	for s.producing[topic] {
		if l, _, _ := s.cl.PartitionLeader(topic, partition); l >= 0 {
			break
		}
		s.cl.ForceMetadataRefresh()
		select {
		case <-ctx.Done():
			return fmt.Errorf("topic %q: partition %d not visible after creation: %w", topic, partition, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	s.topo[topic] = have
	return nil
}

// learnLimit learns the batch limit of a topic WriteMetadata did not
// describe, before the producer first writes to it.
func (s *Sink) learnLimit(ctx context.Context, topic string) error {
	if _, known := s.limits.of(topic); known {
		return nil
	}
	tt, err := s.describe(ctx, []string{topic})
	if err != nil {
		return err
	}
	n := tt[topic].maxMessage
	if n <= 0 {
		n = defaultBatchBytes // not readable: the brokers' default
	}
	s.limits.set(topic, n)
	return nil
}

// partitions returns the partitions of topic, and whether it exists.
func (s *Sink) partitions(ctx context.Context, topic string) (kadm.PartitionDetails, bool, error) {
	details, err := s.adm.ListTopics(ctx, topic)
	if err != nil {
		return nil, false, fmt.Errorf("describe topic %q: %w", topic, err)
	}
	d, ok := details[topic]
	if !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
		return nil, false, nil
	}
	if d.Err != nil {
		return nil, false, fmt.Errorf("describe topic %q: %w", topic, d.Err)
	}
	return d.Partitions, true, nil
}

// led says whether partitions from to to (excluded) all have a leader.
func led(parts kadm.PartitionDetails, from, to int) bool {
	for p := from; p < to; p++ {
		if d, ok := parts[int32(p)]; !ok || d.Err != nil || d.Leader < 0 {
			return false
		}
	}
	return true
}

// WriteMetadata learns the partitions each topic should have: a topic this
// sink creates gets them all, even those no batch needs, with the source's
// configs and replication factor. Before anything is written or created
// it checks every target topic, existing (checkTopics) or to create
// (checkCreate): a restore that cannot write all it reads fails before it
// changes anything. It adds partitions a topic lacks when create_topics
// allows.
func (s *Sink) WriteMetadata(ctx context.Context, m sdk.Metadata) error {
	if s.cfg.CheckReport != "" {
		return s.check(ctx, m)
	}
	if s.off.modes() > 0 {
		return s.offsets(ctx, m)
	}
	m = s.m.Metadata(m)
	names := make([]string, 0, len(m.Topics))
	for _, t := range m.Topics {
		names = append(names, t.Name)
		s.planned[t.Name] = max(s.planned[t.Name], t.Partitions)
		if len(t.Configs) > 0 {
			s.configs[t.Name] = t.Configs
		}
		s.rfs[t.Name] = s.replication(t)
	}
	have, err := s.describe(ctx, names)
	if err != nil {
		return err
	}
	var existing, missing []sdk.TopicMetadata
	for _, t := range m.Topics {
		if have[t.Name].exists {
			existing = append(existing, t)
		} else {
			missing = append(missing, t)
		}
	}
	if err := s.checkTopics(existing, have); err != nil {
		return err
	}
	if len(missing) > 0 {
		if err := s.createMissing(ctx, missing, have); err != nil {
			return err
		}
	}
	for _, t := range m.Topics {
		for _, w := range targetWarnings(t, have[t.Name], time.Now()) {
			sdk.Logger().Warn(w, "topic", t.Name)
		}
		if n := have[t.Name].maxMessage; n > 0 {
			s.limits.set(t.Name, n)
		}
		if have[t.Name].partitions < int(t.Needs()) { // create_topics: checkTopics refuses it otherwise
			if err := s.ensure(ctx, t.Name, t.Needs()-1); err != nil {
				return err
			}
		}
	}
	if s.eo == nil {
		return nil
	}
	// The restore takes on the target partitions all at once: one save,
	// instead of one before the first record of each. A topic it created
	// is empty: asking a new topic's offsets would wait for its leaders.
	var listed []string
	s.mu.Lock()
	for _, name := range names {
		if n, ok := s.fresh[name]; ok && have[name].partitions == n {
			s.eo.registerEmpty(name, n)
		} else {
			listed = append(listed, name)
		}
	}
	err = s.eo.register(ctx, s.adm, listed...)
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return s.saveState(false)
}

// describe looks at topics, within connect_timeout.
func (s *Sink) describe(ctx context.Context, names []string) (map[string]targetTopic, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout)
	defer cancel()
	return describeTopics(ctx, s.adm, names)
}

// createMissing creates the missing topics, once every one passed
// checkCreate, and notes them in have as they are then.
func (s *Sink) createMissing(ctx context.Context, missing []sdk.TopicMetadata, have map[string]targetTopic) error {
	if !s.cfg.CreateTopics {
		return fmt.Errorf("target topic %q does not exist; create it, or let the restore create it (create_topics = true, --create-topics)", missing[0].Name)
	}
	dctx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout)
	c, err := describeCluster(dctx, s.adm)
	cancel()
	if err != nil {
		return err
	}
	names := make([]string, 0, len(missing))
	for _, t := range missing {
		if err := s.checkCreate(t, c); err != nil {
			return err
		}
		names = append(names, t.Name)
	}
	for _, name := range names {
		if err := s.ensure(ctx, name, 0); err != nil {
			return err
		}
	}
	created, err := s.describe(ctx, names)
	if err != nil {
		return err
	}
	maps.Copy(have, created)
	// As created, with the configs in effect (checkCreate could not see
	// the cluster's defaults if it may not read broker configs).
	return s.checkTopics(missing, have)
}

// Write decodes the batch once and hands its records to the producer; the
// batch is acknowledged, and its memory released, once every record is.
func (s *Sink) Write(ctx context.Context, b sdk.Batch) error {
	if err := s.failed(); err != nil {
		return err
	}
	if s.cfg.CheckReport != "" || s.off.modes() > 0 {
		return errors.New("check_report or an offsets mode is set: the sink writes no record")
	}
	src := sdk.TopicPartition{Topic: b.Topic, Partition: b.Partition}
	topic := s.m.Topic(b.Topic)
	rp, fanout := s.m.Repartitioned(topic)
	if b.IsGap() || b.Count == 0 {
		// Nothing to produce: the batch only moves the source position.
		s.mu.Lock()
		defer s.mu.Unlock()
		f := &inFlight{id: b.ID(), src: src, next: b.NextOffset, fanout: fanout, nulls: s.nulls[src]}
		if s.eo != nil {
			f.srcT = s.eo.source(src)
			f.srcT.pending = append(f.srcT.pending, f)
		}
		s.complete(f)
		return nil
	}
	rec, err := s.dec.Decode(b.Arrow)
	if err != nil {
		return err
	}
	if info, _ := record.Inspect(b.Arrow); info.Codec != record.None {
		// Decompressed into memory of its own: the frame can go now.
		b.FreeFrame()
	}
	v, err := record.NewView(rec)
	if err != nil {
		rec.Release()
		return err
	}
	// The records alias the decoded batch (and, uncompressed, the frame),
	// which stay alive until the producer is done with them.
	n := v.Len()
	f := &inFlight{id: b.ID(), n: n, left: n, rec: rec, view: v, src: src, next: b.NextOffset, fanout: fanout}
	if err := s.route(ctx, f, topic, rp); err != nil {
		rec.Release()
		return err
	}
	if err := s.fits(src, topic, v); err != nil {
		rec.Release()
		return err
	}
	var toProduce, bytes int64
	s.mu.Lock()
	s.outstanding[f.id] = f
	if s.eo != nil {
		f.srcT = s.eo.source(src)
		f.srcT.pending = append(f.srcT.pending, f)
	}
	for i := range n {
		o := f.outOf(f.partition(i))
		if s.eo != nil {
			tt := o.tgt
			if v.Offset(i) < tt.sourceNext(src) {
				// In the target already, and accounted for: a resumed run
				// of a repartitioned topic hands again the batch a killed
				// run had not finished.
				f.left--
				continue
			}
			if len(tt.ahead) > 0 {
				// A resumed run: the records the last run wrote after its
				// last save are in the target already; match them instead.
				if s.eo.hash(v.Key(i), v.Value(i), v.Timestamp(i), s.headers(v, i, src.Partition)) != tt.ahead[0] {
					s.mu.Unlock()
					return errMismatch(sdk.TopicPartition{Topic: topic, Partition: o.partition}, tt.t.Next)
				}
				tt.ahead = tt.ahead[1:]
				s.eo.landed(f, o, i, tt.t.Next)
				s.matched++
				f.left--
				continue
			}
		}
		o.add(i, fanout)
		toProduce++
		if s.bytes != nil {
			bytes += v.RecordBytes(i)
		}
	}
	if f.left == 0 {
		s.complete(f)
	}
	s.mu.Unlock()
	if err := s.records.wait(ctx, toProduce); err != nil {
		return err
	}
	if err := s.bytes.wait(ctx, bytes); err != nil {
		return err
	}
	recs := make([]kgo.Record, n)
	id := f.id
	done := func(r *kgo.Record, err error) { s.done(id, r, err) }
	for _, o := range f.outs {
		if o == nil {
			continue
		}
		for k := range o.count {
			i := o.at(k)
			r := &recs[i]
			r.Topic, r.Partition = topic, o.partition
			r.Key, r.Value = v.Key(i), v.Value(i)
			r.Timestamp = time.UnixMilli(v.Timestamp(i))
			if nh := v.NumHeaders(i); nh > 0 || s.cfg.OriginalHeaders {
				r.Headers = make([]kgo.RecordHeader, 0, nh+len(originalHeaders))
				for hk, hv := range s.headers(v, i, src.Partition) {
					r.Headers = append(r.Headers, kgo.RecordHeader{Key: hk, Value: hv})
				}
			}
			s.cl.Produce(ctx, r, done)
		}
	}
	return nil
}

// route finds the target partitions of f's records (with fanout, by key,
// counting the records without a key of its source partition), makes sure
// the target topic has them, and with restore_state takes them on.
func (s *Sink) route(ctx context.Context, f *inFlight, topic string, rp restore.Repartition) error {
	highest := s.m.Partition(f.src.Partition)
	if f.fanout {
		f.outs = make([]*out, rp.Partitions)
		f.parts = make([]int32, f.n)
		nulls := s.nulls[f.src]
		for i := range f.n {
			key := f.view.Key(i)
			p := rp.Partition(key, f.src.Partition, nulls)
			if key == nil {
				nulls++
			}
			f.parts[i] = p
			if f.outs[p] == nil {
				f.outs[p] = &out{partition: p}
			}
		}
		s.nulls[f.src], f.nulls = nulls, nulls
		highest = rp.Partitions - 1
	} else {
		f.outs = []*out{{partition: highest}}
	}
	if err := s.ensure(ctx, topic, highest); err != nil {
		return err
	}
	if err := s.learnLimit(ctx, topic); err != nil {
		return err
	}
	s.producing[topic] = true
	if s.eo == nil {
		return nil
	}
	for _, o := range f.outs {
		if o == nil {
			continue
		}
		s.mu.Lock()
		tt, started, err := s.eo.open(ctx, s.adm, sdk.TopicPartition{Topic: topic, Partition: o.partition})
		s.mu.Unlock()
		if err != nil {
			return err
		}
		o.tgt = tt
		if started {
			if err := s.saveState(false); err != nil {
				return err
			}
		}
	}
	return nil
}

// partition is the target partition of record i.
func (f *inFlight) partition(i int) int32 {
	if !f.fanout {
		return f.outs[0].partition
	}
	return f.parts[i]
}

// originalHeaders are the headers include_original_offset_header appends.
var originalHeaders = [...]string{"x-original-offset", "x-original-partition", "x-original-timestamp"}

// headers yields the headers record i of v (of source partition
// partition) is produced with: its own, then with
// include_original_offset_header where it was in the source.
func (s *Sink) headers(v *record.View, i int, partition int32) func(yield func(string, []byte) bool) {
	own := viewHeaders(v, i)
	if !s.cfg.OriginalHeaders {
		return own
	}
	return func(yield func(string, []byte) bool) {
		done := false
		own(func(k string, val []byte) bool {
			done = !yield(k, val)
			return !done
		})
		if done {
			return
		}
		for j, n := range [...]int64{v.Offset(i), int64(partition), v.Timestamp(i)} {
			if !yield(originalHeaders[j], strconv.AppendInt(nil, n, 10)) {
				return
			}
		}
	}
}

// fits fails a batch with a record larger than the target topic takes,
// before any of it is produced.
func (s *Sink) fits(src sdk.TopicPartition, topic string, v *record.View) error {
	limit, _ := s.limits.of(topic)
	for i := range v.Len() {
		if need := batchBytes(v.Key(i), v.Value(i), s.headers(v, i, src.Partition)); need > limit {
			return errTooLarge(src, v.Offset(i), v.RecordBytes(i), need, topic, limit)
		}
	}
	return nil
}

func (s *Sink) done(id sdk.BatchID, r *kgo.Record, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if errors.Is(err, kerr.InvalidRecord) {
			err = fmt.Errorf("%w (a compacted topic refuses records without a key)", err)
		}
		s.failLocked(fmt.Errorf("produce to %s/%d: %w", r.Topic, r.Partition, s.sec.explain(err)))
		return
	}
	f := s.outstanding[id]
	if f == nil || s.err != nil {
		return
	}
	// The promises of a partition come in order: this is the next record
	// of the batch produced to it.
	o := f.outOf(r.Partition)
	i := o.at(o.acked)
	o.acked++
	if s.eo != nil {
		t := o.tgt.t
		if r.Offset != t.Next {
			s.failLocked(errForeign(sdk.TopicPartition{Topic: r.Topic, Partition: r.Partition}, r.Offset, t.Next))
			return
		}
		s.eo.landed(f, o, i, r.Offset)
	}
	s.produced++
	f.left--
	if f.left == 0 {
		s.complete(f)
	}
}

// complete acknowledges a batch whose records are all durable and, for a
// restore, moves its source partition's position. The caller holds s.mu.
func (s *Sink) complete(f *inFlight) {
	delete(s.outstanding, f.id)
	if f.rec != nil {
		f.rec.Release()
	}
	if s.eo != nil && f.srcT.settle() {
		s.eo.dirty = true
	}
	s.ack(f.id)
}

// fail ends the run with err: a produce that failed, or a connection
// that failed for good (a login refused by a broker, a certificate not
// trusted), which the client would retry forever.
func (s *Sink) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failLocked(err)
}

func (s *Sink) failLocked(err error) {
	if s.err == nil {
		s.err = err
		s.failCh <- err
	}
}

// Failed hands the run the sink's first failure, at once.
func (s *Sink) Failed() <-chan error { return s.failCh }

func (s *Sink) failed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *Sink) Flush(ctx context.Context) error {
	if s.cl == nil {
		return s.failed()
	}
	if err := s.cl.Flush(ctx); err != nil {
		return fmt.Errorf("flush producer: %w", err)
	}
	return s.failed()
}

func (s *Sink) Metrics() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return map[string]int64{"records_produced": s.produced, "records_matched": s.matched, "records_durable": s.produced + s.matched, "topics_created": s.created}
}

// End implements sdk.Ender: a restore that completed is marked finished
// in its state at Teardown.
func (s *Sink) End(_ context.Context, o sdk.Outcome) { s.outcome = o }

func (s *Sink) Teardown(ctx context.Context) error {
	// The producer goes first: the acks it got until then are in the
	// restore's state that follows. After a failed run, what it was
	// handed is given a moment to be acknowledged (or to fail), so that the
	// state says exactly what the target holds.
	if s.cl != nil {
		if s.eo != nil && s.outcome == sdk.OutcomeFailed {
			fctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			_ = s.cl.Flush(fctx)
			cancel()
		}
		s.cl.Close()
		s.cl = nil
	}
	var err error
	if s.eo != nil && s.stopSave != nil {
		close(s.stopSave)
		<-s.saved
		s.stopSave = nil
		finished := false
		if s.outcome == sdk.OutcomeComplete {
			s.mu.Lock()
			err = s.eo.leftAhead()
			s.mu.Unlock()
			finished = err == nil
		}
		// After a failure too (OutcomeFailed): what is durable stays
		// accounted for, and the report says exactly that.
		err = errors.Join(err, s.saveState(finished))
	}
	if s.dec != nil {
		s.dec.Close()
	}
	return err
}

// viewHeaders yields the headers of record i of v.
func viewHeaders(v *record.View, i int) func(yield func(string, []byte) bool) {
	return func(yield func(string, []byte) bool) {
		for j := range v.NumHeaders(i) {
			h := v.Header(i, j)
			if !yield(h.Key, h.Value) {
				return
			}
		}
	}
}

// configPtrs is a topic's configs as CreateTopic takes them.
func configPtrs(c map[string]string) map[string]*string {
	if len(c) == 0 {
		return nil
	}
	out := make(map[string]*string, len(c))
	for k, v := range c {
		out[k] = &v
	}
	return out
}
