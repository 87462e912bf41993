package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/param"
	"github.com/kpipe/kpipe/sdk/record"
)

type sourceConfig struct {
	BootstrapServers        []string      `param:"bootstrap_servers" required:"true" help:"Kafka brokers to start from, host:port"`
	Topics                  []string      `param:"topics" required:"true" help:"topic names or globs (such as \"orders-*\"); globs skip internal topics starting with __ unless include_internal_topics"`
	ExcludeTopics           []string      `param:"exclude_topics" help:"topic names or globs to leave out of those topics selects"`
	IncludeInternalTopics   bool          `param:"include_internal_topics" default:"false" help:"let globs of topics match internal topics too (names starting with __, such as __consumer_offsets)"`
	ConsumerGroupSnapshot   bool          `param:"consumer_group_snapshot" default:"false" help:"store every consumer group's committed offsets on the topics backed up, asked of each group's coordinator beside the end offsets taken at start"`
	Continuous              bool          `param:"continuous" default:"false" help:"keep reading new records until stopped; when false, stop at the end offsets taken at start"`
	IsolationLevel          string        `param:"isolation_level" default:"read_committed" help:"read_committed (only committed transactional data) or read_uncommitted"`
	ConnectTimeout          time.Duration `param:"connect_timeout" default:"30s" help:"how long to wait for the cluster to answer at start"`
	MetadataRefreshInterval time.Duration `param:"metadata_refresh_interval" default:"5s" help:"when continuous, how often to look for new topics matching topics, partitions added, and topics deleted or re-created (a re-created topic is backed up as a new incarnation)"`
	MaxBrokerOutage         time.Duration `param:"max_broker_outage" default:"0s" help:"how long the brokers may stay unreachable mid-run before the run fails (exit 1, what was committed intact); 0: 5m for a snapshot, unbounded when continuous; negative: unbounded"`
}

type partState struct {
	topic     string
	id        sdk.TopicID
	partition int32
	next      int64 // next offset to read
	end       int64 // stop here in snapshot mode
	hwm       int64 // the log's end as the last fetch of it said
	done      bool
}

// lag is how many records the partition is behind: up to its end in
// snapshot mode, up to the log's end otherwise.
func (st *partState) lag(continuous bool) int64 {
	target := st.end
	if continuous {
		target = st.hwm
	}
	return max(0, target-st.next)
}

// Source reads Kafka partitions into batches, one per fetched partition.
// Its fetches are sized in decompressed bytes: it learns how well the data
// compresses from each fetched batch and asks the brokers for no more
// compressed bytes than fit its share of the host's in-flight budget, so
// its memory does not depend on the data.
type Source struct {
	sdk.UnimplementedSource
	cfg     sourceConfig
	sec     securityConfig
	cl      *kgo.Client
	adm     *kadm.Client
	pool    *record.Pool
	pools   *fetchPools
	bld     *record.Builder
	parts   map[string]*partState
	pending []sdk.Batch
	meta    *sdk.Metadata // sent with the first Read
	sizer   *fetchSizer
	outage  *outage
	// topicIDs holds the incarnation followed of each topic, deleted ones
	// included; refresh looks for changes every MetadataRefreshInterval,
	// or at once when refreshNow is set.
	topicIDs    map[string]sdk.TopicID
	lastRefresh time.Time
	refreshNow  bool

	records, batches, gaps atomic.Int64
	// partitions counts those read; partitionsDone, in a snapshot, those
	// that reached their end offset.
	partitions, partitionsDone atomic.Int64
	lag                        atomic.Int64                          // records behind, summed over partitions
	lags                       atomic.Pointer[[]sdk.PartitionMetric] // records behind, per partition
}

// NewSource returns the kafka source.
func NewSource() sdk.Source { return &Source{} }

func (s *Source) Spec() sdk.Spec {
	return sdk.Spec{Name: "kafka", Version: sdk.Version, Summary: "Apache Kafka topics (franz-go)", Config: param.Multi{&s.cfg, &s.sec}}
}

func (s *Source) Configure(context.Context) error {
	errs := s.sec.check()
	if len(s.cfg.BootstrapServers) == 0 {
		errs = append(errs, param.Errorf("bootstrap_servers", "is empty; list at least one broker, e.g. [\"127.0.0.1:9092\"]"))
	}
	if len(s.cfg.Topics) == 0 {
		errs = append(errs, param.Errorf("topics", "is empty; list topic names or globs"))
	}
	for _, t := range s.cfg.Topics {
		if _, err := path.Match(t, ""); err != nil {
			errs = append(errs, param.Errorf("topics", "bad glob %q: %v", t, err))
		}
	}
	for _, t := range s.cfg.ExcludeTopics {
		if _, err := path.Match(t, ""); err != nil {
			errs = append(errs, param.Errorf("exclude_topics", "bad glob %q: %v", t, err))
		}
	}
	if s.cfg.MetadataRefreshInterval <= 0 {
		errs = append(errs, param.Errorf("metadata_refresh_interval", "must be positive, got %s", s.cfg.MetadataRefreshInterval))
	}
	if s.cfg.IsolationLevel != "read_committed" && s.cfg.IsolationLevel != "read_uncommitted" {
		errs = append(errs, param.Errorf("isolation_level", "%q is not read_committed or read_uncommitted", s.cfg.IsolationLevel))
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

func isGlob(s string) bool { return strings.ContainsAny(s, "*?[") }

// matchTopics resolves names and globs against the cluster's topics: a
// named topic that does not exist, or a glob that matches none, is an
// error.
func (s *Source) matchTopics(topics kadm.TopicDetails) ([]string, error) {
	for _, p := range s.cfg.Topics {
		if !isGlob(p) {
			if _, ok := topics[p]; !ok {
				return nil, fmt.Errorf("topic %q does not exist on the cluster; create it or fix topics", p)
			}
			continue
		}
		n := 0
		for name := range topics {
			if ok, _ := path.Match(p, name); ok && s.selects(name) {
				n++
			}
		}
		if n == 0 {
			return nil, fmt.Errorf("no topic on the cluster matches %q; fix topics", p)
		}
	}
	return s.matching(topics), nil
}

// matching returns the cluster's topics the source backs up, sorted.
func (s *Source) matching(topics kadm.TopicDetails) []string {
	var out []string
	for name, d := range topics {
		if d.Err == nil && s.selects(name) {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// selects says whether the source backs up a topic: one that topics names,
// or that a glob of topics matches (an internal one, starting with __,
// only with include_internal_topics), and no glob of exclude_topics does.
func (s *Source) selects(name string) bool {
	for _, p := range s.cfg.ExcludeTopics {
		if ok, _ := path.Match(p, name); ok {
			return false
		}
	}
	for _, p := range s.cfg.Topics {
		if p == name {
			return true
		}
		if ok, _ := path.Match(p, name); ok && isGlob(p) && (s.cfg.IncludeInternalTopics || !strings.HasPrefix(name, "__")) {
			return true
		}
	}
	return false
}

func key(topic string, partition int32) string { return fmt.Sprintf("%s/%d", topic, partition) }

// Open resolves the topics, takes the end offsets (the snapshot a
// non-continuous backup stops at) and starts consuming each partition from
// its resume position or its start.
func (s *Source) Open(ctx context.Context, o sdk.SourceOptions) error {
	readCommitted := s.cfg.IsolationLevel == "read_committed"
	s.sizer = newFetchSizer(o.InFlightBytes)
	s.pool = record.NewPoolWithLimit(o.InFlightBytes)
	s.pools = newFetchPools(s.pool, s.sizer)
	wire := s.sizer.wire()
	s.outage = newOutage(s.outageLimit())
	opts := []kgo.Opt{
		kgo.WithHooks(s.outage),
		kgo.KeepControlRecords(),
		kgo.FetchMaxBytes(wire),
		kgo.FetchMaxPartitionBytes(partitionShare(wire)),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.WithHooks(s.sizer),
		kgo.WithPools(s.pools),
		kgo.WithDecompressor(newDecompressor(s.pools)),
	}
	if readCommitted {
		opts = append(opts, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	} else {
		opts = append(opts, kgo.FetchIsolationLevel(kgo.ReadUncommitted()))
	}
	var err error
	s.cl, s.adm, err = connect(ctx, s.cfg.BootstrapServers, s.cfg.ConnectTimeout, &s.sec, s.outage.fail, opts...)
	if err != nil {
		return err
	}
	actx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout)
	defer cancel()
	md, err := s.adm.Metadata(actx)
	if err != nil {
		return fmt.Errorf("list topics: %w", err)
	}
	details := md.Topics
	topics, err := s.matchTopics(details)
	if err != nil {
		return err
	}
	var groups []string
	if s.cfg.ConsumerGroupSnapshot {
		if groups, err = s.listGroups(actx); err != nil {
			return err
		}
	}
	// The groups' offsets are asked for beside the end offsets: one
	// instant, as nearly as the cluster allows.
	snapCh := make(chan groupSnapshot, 1)
	go func() {
		if s.cfg.ConsumerGroupSnapshot {
			snapCh <- s.fetchGroups(actx, groups, topics)
		} else {
			snapCh <- groupSnapshot{}
		}
	}()
	var ends kadm.ListedOffsets
	if readCommitted {
		ends, err = s.adm.ListCommittedOffsets(actx, topics...)
	} else {
		ends, err = s.adm.ListEndOffsets(actx, topics...)
	}
	snap := <-snapCh
	if snap.err != nil {
		return snap.err
	}
	if err != nil {
		return fmt.Errorf("list end offsets: %w", err)
	}
	if err := ends.Error(); err != nil {
		return fmt.Errorf("list end offsets: %w", err)
	}
	if s.meta, err = s.metadata(actx, md.Cluster, topics, details); err != nil {
		return err
	}
	if s.cfg.ConsumerGroupSnapshot {
		s.meta.Groups, s.meta.GroupsTakenAt = snap.groups, snap.taken
	}
	starts, err := s.adm.ListStartOffsets(actx, topics...)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return fmt.Errorf("list start offsets: %w", err)
	}
	from := map[string]sdk.Position{}
	for _, p := range o.Resume {
		from[key(p.Topic, p.Partition)] = p
	}
	s.parts = map[string]*partState{}
	s.topicIDs = map[string]sdk.TopicID{}
	for _, t := range topics {
		s.topicIDs[t] = sdk.TopicID(details[t].ID)
	}
	recreated := map[string]sdk.TopicID{}
	consume := map[string]map[int32]kgo.Offset{}
	ends.Each(func(lo kadm.ListedOffset) {
		st := &partState{topic: lo.Topic, id: s.topicIDs[lo.Topic], partition: lo.Partition, next: 0, end: lo.Offset, hwm: lo.Offset}
		if p, ok := from[key(lo.Topic, lo.Partition)]; ok {
			if p.TopicID != (sdk.TopicID{}) && st.id != (sdk.TopicID{}) && p.TopicID != st.id {
				recreated[lo.Topic] = p.TopicID // a position in the incarnation before
			} else {
				st.next = p.NextOffset
			}
		}
		s.parts[key(lo.Topic, lo.Partition)] = st
		off := s.startAt(st, starts)
		if !s.cfg.Continuous && st.next >= st.end {
			st.done = true
			return
		}
		if consume[lo.Topic] == nil {
			consume[lo.Topic] = map[int32]kgo.Offset{}
		}
		consume[lo.Topic][lo.Partition] = off
	})
	for topic, before := range recreated {
		sdk.Logger().Warn("topic re-created since the last run: backing up its new incarnation from its start, apart from the one before",
			"topic", topic, "topic_id", s.topicIDs[topic].String(), "topic_id_before", before.String())
	}
	s.lastRefresh = time.Now()
	s.updateLag()
	// The client consumes nothing until now: the partitions, at their
	// positions, join it here.
	s.cl.AddConsumePartitions(consume)
	return nil
}

// outageLimit is max_broker_outage, its default by mode resolved: 0 for
// unbounded.
func (s *Source) outageLimit() time.Duration {
	switch d := s.cfg.MaxBrokerOutage; {
	case d < 0:
		return 0
	case d > 0:
		return d
	case s.cfg.Continuous:
		return 0
	}
	return 5 * time.Minute
}

// metadata describes the topics as a restore needs them: partitions,
// replication factor and the configs set on each topic.
func (s *Source) metadata(ctx context.Context, cluster string, topics []string, details kadm.TopicDetails) (*sdk.Metadata, error) {
	configs, err := s.adm.DescribeTopicConfigs(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("describe topic configs: %w", err)
	}
	m := &sdk.Metadata{ClusterID: cluster}
	for _, t := range topics {
		d := details[t]
		tm := sdk.TopicMetadata{Name: t, ID: sdk.TopicID(d.ID), Partitions: int32(len(d.Partitions))}
		if p, ok := d.Partitions[0]; ok {
			tm.ReplicationFactor = int32(len(p.Replicas))
		}
		rc, err := configs.On(t, nil)
		if err == nil {
			err = rc.Err
		}
		if err != nil {
			return nil, fmt.Errorf("describe configs of topic %q: %w", t, err)
		}
		for _, c := range rc.Configs {
			if c.Key == "min.insync.replicas" {
				if n, err := strconv.Atoi(c.MaybeValue()); err == nil {
					tm.MinInsyncReplicas = int32(n)
				}
			}
			if c.Source != kmsg.ConfigSourceDynamicTopicConfig || c.Sensitive || c.Value == nil {
				continue // a default, or nothing to restore
			}
			if tm.Configs == nil {
				tm.Configs = map[string]string{}
			}
			tm.Configs[c.Key] = *c.Value
		}
		m.Topics = append(m.Topics, tm)
	}
	return m, nil
}

// updateLag takes the partitions' lag for Metrics and PartitionMetrics.
func (s *Source) updateLag() {
	var lag, done int64
	lags := make([]sdk.PartitionMetric, 0, len(s.parts))
	for _, st := range s.parts {
		if st.done {
			done++
		}
		l := st.lag(s.cfg.Continuous)
		lag += l
		lags = append(lags, sdk.PartitionMetric{Topic: st.topic, Partition: st.partition, Name: "lag_records", Value: l})
	}
	s.lag.Store(lag)
	s.lags.Store(&lags)
	s.partitions.Store(int64(len(s.parts)))
	s.partitionsDone.Store(done)
}

// PartitionMetrics reports each partition's lag_records.
func (s *Source) PartitionMetrics() []sdk.PartitionMetric {
	if lags := s.lags.Load(); lags != nil {
		return *lags
	}
	return nil
}

func (s *Source) allDone() bool {
	for _, p := range s.parts {
		if !p.done {
			return false
		}
	}
	return true
}

// Read returns the next batch; io.EOF once every partition has reached its
// end offset (not in continuous mode). The first Read returns the metadata
// of the topics.
func (s *Source) Read(ctx context.Context) (sdk.Batch, error) {
	if s.meta != nil {
		m := s.meta
		s.meta = nil
		return sdk.Batch{Metadata: m}, nil
	}
	for len(s.pending) == 0 {
		if !s.cfg.Continuous && s.allDone() {
			return sdk.Batch{}, io.EOF
		}
		if s.cfg.Continuous && (s.refreshNow || time.Since(s.lastRefresh) >= s.cfg.MetadataRefreshInterval) {
			if err := s.refresh(ctx); err != nil {
				return sdk.Batch{}, err
			}
			if len(s.pending) > 0 {
				break
			}
		}
		// A poll returns at least every second, so that an outage is seen
		// while the client retries on its own.
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fetches := s.cl.PollFetches(pctx)
		cancel()
		if err := ctx.Err(); err != nil {
			recycle(fetches)
			return sdk.Batch{}, err
		}
		if err := s.outage.check(); err != nil {
			recycle(fetches)
			return sdk.Batch{}, err
		}
		var ferr error
		fetches.EachError(func(t string, p int32, err error) {
			switch {
			case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
			case s.cfg.Continuous && (errors.Is(err, kerr.UnknownTopicID) || errors.Is(err, kerr.UnknownTopicOrPartition)):
				s.refreshNow = true // deleted, maybe re-created: look
			case ferr == nil:
				ferr = s.partitionError(t, p, err)
			}
		})
		if ferr != nil {
			recycle(fetches)
			return sdk.Batch{}, ferr
		}
		var finished map[string][]int32
		var berr error
		eachPartition(fetches, func(topicID sdk.TopicID, fp kgo.FetchTopicPartition) {
			st := s.parts[key(fp.Topic, fp.Partition)]
			if st == nil || st.done || berr != nil {
				return
			}
			if topicID != (sdk.TopicID{}) && st.id != (sdk.TopicID{}) && topicID != st.id {
				return // fetched from an incarnation no longer followed
			}
			st.hwm = max(st.hwm, fp.HighWatermark)
			if fp.LogStartOffset > st.next {
				// The cluster deleted records before they were read; the
				// client went on from the log's new start.
				s.skipTo(st, fp.LogStartOffset)
			}
			b, err := s.toBatch(st, fp.Records)
			if err != nil {
				berr = err
				return
			}
			if b.NextOffset > 0 {
				s.pending = append(s.pending, b)
			}
			if !s.cfg.Continuous && st.next >= st.end {
				st.done = true
				if finished == nil {
					finished = map[string][]int32{}
				}
				finished[fp.Topic] = append(finished[fp.Topic], fp.Partition)
			}
		})
		recycle(fetches)
		if berr != nil {
			return sdk.Batch{}, berr
		}
		s.updateLag()
		if finished != nil {
			// Pausing, not removing: removing partitions makes franz-go
			// rebuild its fetch session, seconds of stall at 100
			// partitions.
			s.cl.PauseFetchPartitions(finished)
		}
		if wire, changed := s.sizer.resize(); changed {
			s.cl.UpdateFetchMaxBytes(wire, partitionShare(wire))
		}
	}
	b := s.pending[0]
	s.pending = s.pending[1:]
	s.records.Add(b.Count)
	s.batches.Add(1)
	return b, nil
}

// skipTo moves a partition past offsets the cluster deleted before they
// were read, and queues the gap that records them.
func (s *Source) skipTo(st *partState, start int64) {
	s.pending = append(s.pending, sdk.NewGap(st.topic, st.id, st.partition, st.next, start, sdk.GapDeleted))
	s.gaps.Add(1)
	sdk.Logger().Warn("records deleted by the cluster before they were read (retention or DeleteRecords): skipping them",
		"topic", st.topic, "partition", st.partition, "from", st.next, "to", start-1)
	st.next = start
}

// partitionError types a fetch error of one partition.
func (s *Source) partitionError(topic string, partition int32, err error) error {
	if ferr := s.sec.failure(err); ferr != nil {
		return ferr // the login or the handshake, not the partition
	}
	pe := &sdk.PartitionError{Topic: topic, Partition: partition, Offset: -1, Err: fmt.Errorf("fetch: %w", err)}
	if st := s.parts[key(topic, partition)]; st != nil {
		pe.Offset = st.next
	}
	if ke := (*kerr.Error)(nil); errors.As(err, &ke) {
		pe.Code, pe.Retryable = ke.Message, ke.Retriable
	}
	return pe
}

// recycle gives the fetched records back to their pools, once copied.
func recycle(fs kgo.Fetches) {
	fs.EachRecord(func(r *kgo.Record) { r.Recycle() })
}

// toBatch turns the fetched records of one partition into a batch. Control
// records (transaction markers) are never data, but they advance the
// position; records at or past the snapshot end are left for a later run.
func (s *Source) toBatch(st *partState, recs []*kgo.Record) (sdk.Batch, error) {
	if s.bld == nil {
		// The builder's buffers come from the pool, and go back to it once
		// the SDK has encoded the batch: reading batch after batch reuses
		// the same memory.
		s.bld = record.NewBuilder(s.pool)
	}
	bld := s.bld
	var sz record.Sizes
	for _, r := range recs {
		sz.Records++
		sz.KeyBytes += len(r.Key)
		sz.ValueBytes += len(r.Value)
		sz.Headers += len(r.Headers)
		for _, h := range r.Headers {
			sz.HeaderKeyBytes += len(h.Key)
			sz.HeaderValueBytes += len(h.Value)
		}
	}
	bld.Reserve(sz)
	next := int64(-1)
	for _, r := range recs {
		if r.Offset < st.next {
			continue
		}
		if !s.cfg.Continuous && r.Offset >= st.end {
			// Past the snapshot: every offset below its end that still
			// exists was read (those missing were compacted away).
			next = max(next, st.end)
			break
		}
		next = r.Offset + 1
		if r.Attrs.IsControl() {
			continue
		}
		bld.AppendFields(r.Offset, r.Timestamp.UnixMilli(), record.TimestampType(r.Attrs.TimestampType()), r.Key, r.Value)
		for _, h := range r.Headers {
			bld.AppendHeader(h.Key, h.Value)
		}
	}
	if next < 0 {
		return sdk.Batch{}, nil
	}
	st.next = next
	b, err := sdk.NewBatch(st.topic, st.partition, bld, next)
	b.TopicID = st.id
	return b, err
}

func (s *Source) Metrics() map[string]int64 {
	m := map[string]int64{"records_read": s.records.Load(), "batches_read": s.batches.Load(), "lag_records": s.lag.Load(), "gaps": s.gaps.Load(),
		"partitions": s.partitions.Load()}
	if !s.cfg.Continuous {
		m["partitions_done"] = s.partitionsDone.Load()
	}
	if s.sizer != nil {
		m["fetch_max_bytes"] = int64(s.sizer.current.Load())
	}
	return m
}

func (s *Source) Teardown(context.Context) error {
	if s.cl != nil {
		s.cl.Close()
		s.cl = nil
	}
	if s.bld != nil {
		s.bld.Release()
		s.bld = nil
	}
	return nil
}
