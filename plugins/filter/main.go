// Command kpipe-plugin-filter keeps the records that pass a time window, a
// partition list and a CEL expression (see package sdk/celexpr), all
// optional and combined with AND. Time window bounds are inclusive epoch
// milliseconds. A batch that passes whole leaves unchanged, without being
// decoded or re-encoded; one that fails whole is dropped the same way.
package main

import (
	"context"
	"slices"
	"sync/atomic"

	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/celexpr"
	"github.com/kpipe/kpipe/sdk/param"
	"github.com/kpipe/kpipe/sdk/record"
)

func main() { sdk.Serve(New) }

type config struct {
	Expression      string  `param:"expression" help:"CEL expression over topic, partition, offset, timestamp, timestamp_type, key, value, headers; records for which it is true are kept"`
	TimeWindowStart int64   `param:"time_window_start" default:"-1" help:"keep records with timestamp >= this, epoch milliseconds (-1: no bound)"`
	TimeWindowEnd   int64   `param:"time_window_end" default:"-1" help:"keep records with timestamp <= this, epoch milliseconds (-1: no bound)"`
	Partitions      []int32 `param:"partitions" help:"keep only records of these partitions; all when empty"`
}

// Filter is the filter transform.
type Filter struct {
	sdk.UnimplementedTransform
	cfg     config
	prg     *celexpr.Program
	bld     *record.Builder
	kept    atomic.Int64
	dropped atomic.Int64
}

// New returns the filter transform.
func New() sdk.Transform { return &Filter{} }

func (f *Filter) Spec() sdk.Spec {
	return sdk.Spec{Name: "filter", Version: sdk.Version, Summary: "keeps records by time window, partition and CEL expression", Config: &f.cfg}
}

func (f *Filter) Configure(context.Context) error {
	errs := param.CheckTimeWindow(f.cfg.TimeWindowStart, f.cfg.TimeWindowEnd)
	if f.cfg.Expression != "" {
		prg, err := celexpr.Compile(f.cfg.Expression)
		if err != nil {
			errs = append(errs, param.Errorf("expression", "%v", err))
		}
		f.prg = prg
	}
	if len(errs) > 0 {
		return errs
	}
	f.bld = record.NewBuilder(nil)
	return nil
}

func (f *Filter) window() record.Window {
	return record.Window{Start: f.cfg.TimeWindowStart, End: f.cfg.TimeWindowEnd}
}

// Process keeps the records of b that pass. A batch whose bounds show that
// all its records pass (or none) is passed on (or dropped) without being
// decoded.
func (f *Filter) Process(_ context.Context, b sdk.Batch) ([]sdk.Batch, error) {
	win := f.window()
	if len(f.cfg.Partitions) > 0 && !slices.Contains(f.cfg.Partitions, b.Partition) {
		f.dropped.Add(b.Count)
		return nil, nil
	}
	if !win.Overlaps(b.MinTimestamp, b.MaxTimestamp) {
		f.dropped.Add(b.Count)
		return nil, nil
	}
	if f.prg == nil && win.Covers(b.MinTimestamp, b.MaxTimestamp) {
		f.kept.Add(b.Count)
		return []sdk.Batch{b}, nil
	}
	v, err := record.DecodeView(b.Arrow)
	if err != nil {
		return nil, err
	}
	defer v.Batch.Release()
	keep := 0
	for i := range v.Len() {
		ok := win.Contains(v.Timestamp(i))
		if ok && f.prg != nil {
			if ok, err = f.prg.Match(b.Topic, b.Partition, v, i); err != nil {
				return nil, err
			}
		}
		if ok {
			r := v.Record(i)
			f.bld.Append(&r)
			keep++
		}
	}
	f.kept.Add(int64(keep))
	f.dropped.Add(b.Count - int64(keep))
	if keep == v.Len() {
		f.bld.NewRecord().Release()
		return []sdk.Batch{b}, nil
	}
	if keep == 0 {
		return nil, nil
	}
	out, err := sdk.NewBatch(b.Topic, b.Partition, f.bld, b.NextOffset)
	if err != nil {
		return nil, err
	}
	out.TopicID = b.TopicID
	return []sdk.Batch{out}, nil
}

func (f *Filter) Metrics() map[string]int64 {
	return map[string]int64{"records_kept": f.kept.Load(), "records_dropped": f.dropped.Load()}
}

func (f *Filter) Teardown(context.Context) error {
	if f.bld != nil {
		f.bld.Release()
	}
	return nil
}
