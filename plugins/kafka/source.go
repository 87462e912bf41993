package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/param"
	"github.com/kpipe/kpipe/sdk/record"
)

type sourceConfig struct {
	BootstrapServers []string      `param:"bootstrap_servers" required:"true" help:"Kafka brokers to start from, host:port"`
	Topics           []string      `param:"topics" required:"true" help:"topic names or globs (such as \"orders-*\"); globs skip internal topics starting with __"`
	Continuous       bool          `param:"continuous" default:"false" help:"keep reading new records until stopped; when false, stop at the end offsets taken at start"`
	IsolationLevel   string        `param:"isolation_level" default:"read_committed" help:"read_committed (only committed transactional data) or read_uncommitted"`
	ConnectTimeout   time.Duration `param:"connect_timeout" default:"30s" help:"how long to wait for the cluster to answer at start"`
	FetchMaxBytes    int32         `param:"fetch_max_partition_bytes" default:"1048576" help:"most bytes fetched per partition per request; bounds a batch"`
}

type partState struct {
	topic     string
	partition int32
	next      int64 // next offset to read
	end       int64 // stop here in snapshot mode
	done      bool
}

// Source reads Kafka partitions into batches, one per fetched partition.
type Source struct {
	sdk.UnimplementedSource
	cfg     sourceConfig
	cl      *kgo.Client
	adm     *kadm.Client
	bld     *record.Builder
	parts   map[string]*partState
	pending []sdk.Batch

	records, batches int64
}

// NewSource returns the kafka source.
func NewSource() sdk.Source { return &Source{} }

func (s *Source) Spec() sdk.Spec {
	return sdk.Spec{Name: "kafka", Version: sdk.Version, Summary: "Apache Kafka topics (franz-go)", Config: &s.cfg}
}

func (s *Source) Configure(context.Context) error {
	var errs param.Errors
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
	if s.cfg.IsolationLevel != "read_committed" && s.cfg.IsolationLevel != "read_uncommitted" {
		errs = append(errs, param.Errorf("isolation_level", "%q is not read_committed or read_uncommitted", s.cfg.IsolationLevel))
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

func isGlob(s string) bool { return strings.ContainsAny(s, "*?[") }

// matchTopics resolves names and globs against the cluster's topics.
func matchTopics(patterns []string, topics kadm.TopicDetails) ([]string, error) {
	var out []string
	for _, p := range patterns {
		if !isGlob(p) {
			if _, ok := topics[p]; !ok {
				return nil, fmt.Errorf("topic %q does not exist on the cluster; create it or fix topics", p)
			}
			out = append(out, p)
			continue
		}
		n := 0
		for name := range topics {
			if ok, _ := path.Match(p, name); ok && !strings.HasPrefix(name, "__") {
				out = append(out, name)
				n++
			}
		}
		if n == 0 {
			return nil, fmt.Errorf("no topic on the cluster matches %q; fix topics", p)
		}
	}
	sort.Strings(out)
	return slices.Compact(out), nil
}

func key(topic string, partition int32) string { return fmt.Sprintf("%s/%d", topic, partition) }

// Open resolves the topics, takes the end offsets (the snapshot a
// non-continuous backup stops at) and starts consuming each partition from
// its resume position or its start.
func (s *Source) Open(ctx context.Context, resume []sdk.Position) error {
	readCommitted := s.cfg.IsolationLevel == "read_committed"
	var err error
	s.cl, s.adm, err = connect(ctx, s.cfg.BootstrapServers, s.cfg.ConnectTimeout)
	if err != nil {
		return err
	}
	actx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout)
	defer cancel()
	details, err := s.adm.ListTopics(actx)
	if err != nil {
		return fmt.Errorf("list topics: %w", err)
	}
	topics, err := matchTopics(s.cfg.Topics, details)
	if err != nil {
		return err
	}
	var ends kadm.ListedOffsets
	if readCommitted {
		ends, err = s.adm.ListCommittedOffsets(actx, topics...)
	} else {
		ends, err = s.adm.ListEndOffsets(actx, topics...)
	}
	if err != nil {
		return fmt.Errorf("list end offsets: %w", err)
	}
	if err := ends.Error(); err != nil {
		return fmt.Errorf("list end offsets: %w", err)
	}
	from := map[string]int64{}
	for _, p := range resume {
		from[key(p.Topic, p.Partition)] = p.NextOffset
	}
	s.parts = map[string]*partState{}
	consume := map[string]map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) {
		st := &partState{topic: o.Topic, partition: o.Partition, next: 0, end: o.Offset}
		off := kgo.NewOffset().AtStart()
		if n, ok := from[key(o.Topic, o.Partition)]; ok {
			st.next = n
			off = kgo.NewOffset().At(n)
		}
		s.parts[key(o.Topic, o.Partition)] = st
		if !s.cfg.Continuous && st.next >= st.end {
			st.done = true
			return
		}
		if consume[o.Topic] == nil {
			consume[o.Topic] = map[int32]kgo.Offset{}
		}
		consume[o.Topic][o.Partition] = off
	})
	opts := []kgo.Opt{
		kgo.ConsumePartitions(consume),
		kgo.KeepControlRecords(),
		kgo.FetchMaxPartitionBytes(s.cfg.FetchMaxBytes),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	}
	if readCommitted {
		opts = append(opts, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	} else {
		opts = append(opts, kgo.FetchIsolationLevel(kgo.ReadUncommitted()))
	}
	s.cl.Close()
	s.cl, s.adm, err = connect(ctx, s.cfg.BootstrapServers, s.cfg.ConnectTimeout, opts...)
	return err
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
// end offset (not in continuous mode).
func (s *Source) Read(ctx context.Context) (sdk.Batch, error) {
	for len(s.pending) == 0 {
		if !s.cfg.Continuous && s.allDone() {
			return sdk.Batch{}, io.EOF
		}
		fetches := s.cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return sdk.Batch{}, err
		}
		var ferr error
		fetches.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) && ferr == nil {
				ferr = fmt.Errorf("fetch %s/%d: %w", t, p, err)
			}
		})
		if ferr != nil {
			return sdk.Batch{}, ferr
		}
		var finished map[string][]int32
		var berr error
		fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
			st := s.parts[key(fp.Topic, fp.Partition)]
			if st == nil || st.done || berr != nil {
				return
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
		if berr != nil {
			return sdk.Batch{}, berr
		}
		if finished != nil {
			s.cl.RemoveConsumePartitions(finished)
		}
	}
	b := s.pending[0]
	s.pending = s.pending[1:]
	s.records += b.Count
	s.batches++
	return b, nil
}

// toBatch turns the fetched records of one partition into a batch. Control
// records (transaction markers) are never data, but they advance the
// position; records at or past the snapshot end are left for a later run.
func (s *Source) toBatch(st *partState, recs []*kgo.Record) (sdk.Batch, error) {
	if s.bld == nil {
		// The builder's buffers go back to the pool once a batch is
		// encoded, so reading batch after batch reuses the same memory.
		s.bld = record.NewBuilder(record.NewPool())
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
	return sdk.NewBatch(st.topic, st.partition, bld, next)
}

func (s *Source) Metrics() map[string]int64 {
	return map[string]int64{"records_read": s.records, "batches_read": s.batches}
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
