package main

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/kpipe/kpipe/sdk"
)

// groupSnapshot asks each consumer group's coordinator for what the group
// has committed on topics (kadm routes each group to its coordinator).
// The caller runs it beside the listing of the end offsets, so that the two
// describe one instant as nearly as the cluster allows; taken is when the
// offsets were asked for.
type groupSnapshot struct {
	groups []sdk.GroupOffsets
	taken  time.Time
	err    error
}

// listGroups names the cluster's consumer groups.
func (s *Source) listGroups(ctx context.Context) ([]string, error) {
	listed, err := s.adm.ListGroups(ctx)
	if err != nil {
		return nil, fmt.Errorf("consumer_group_snapshot: list groups: %w", err)
	}
	return listed.Groups(), nil
}

// fetchGroups fetches the groups' committed offsets on topics.
func (s *Source) fetchGroups(ctx context.Context, groups, topics []string) groupSnapshot {
	snap := groupSnapshot{taken: time.Now().UTC()}
	want := map[string]bool{}
	for _, t := range topics {
		want[t] = true
	}
	fetched := s.adm.FetchManyOffsets(ctx, groups...)
	for _, g := range groups {
		r, ok := fetched[g]
		if !ok {
			continue
		}
		if r.Err != nil {
			snap.err = fmt.Errorf("consumer_group_snapshot: offsets of group %q: %w", g, r.Err)
			return snap
		}
		out := sdk.GroupOffsets{Group: g}
		var ferr error
		r.Fetched.Each(func(o kadm.OffsetResponse) {
			switch {
			case !want[o.Topic]:
			case o.Err != nil:
				if ferr == nil {
					ferr = fmt.Errorf("consumer_group_snapshot: offset of group %q on %s/%d: %w", g, o.Topic, o.Partition, o.Err)
				}
			case o.At >= 0:
				out.Offsets = append(out.Offsets, sdk.GroupOffset{Topic: o.Topic, Partition: o.Partition, Offset: o.At, LeaderEpoch: o.LeaderEpoch, Metadata: o.Metadata})
			}
		})
		if ferr != nil {
			snap.err = ferr
			return snap
		}
		if len(out.Offsets) == 0 {
			continue // nothing on the topics backed up
		}
		sort.Slice(out.Offsets, func(i, j int) bool {
			a, b := out.Offsets[i], out.Offsets[j]
			return a.Topic < b.Topic || a.Topic == b.Topic && a.Partition < b.Partition
		})
		snap.groups = append(snap.groups, out)
	}
	return snap
}
