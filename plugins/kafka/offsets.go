package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/param"
	"github.com/kpipe/kpipe/sdk/restore"
)

// offsetsConfig are the sink's parameters of consumer offset recovery: it
// then plans, executes or rolls back a reset of the groups' offsets on the
// target cluster, and writes no record.
type offsetsConfig struct {
	Plan      string   `param:"offsets_plan" help:"only plan a reset of consumer group offsets on the target cluster: write the plan to this file (JSON), changing nothing; the strategy is consumer_group_strategy, the offset map the restore's (restore_state)"`
	Execute   string   `param:"offsets_execute" help:"only execute the offset plan in this file: commit its offsets (groups with active members are refused, before anything changes), keep the offsets it replaces beside it for a rollback, and read them back"`
	Rollback  string   `param:"offsets_rollback" help:"only roll back the execution of the offset plan in this file: put back the offsets it replaced"`
	Report    string   `param:"offsets_report" help:"with offsets_execute or offsets_rollback: write what was done to this file (JSON)"`
	Strategy  string   `param:"consumer_group_strategy" default:"skip" help:"with offsets_plan: group-snapshot (the offsets stored with the backup, by the offset map), header-based (the same offsets, by the x-original-* headers of the target's records), timestamp (the first record at or after offset_reset_timestamp), cluster-scan (the offsets the groups have now on the cluster at source_cluster_bootstrap_servers, by the offset map) or manual (manual_offsets)"`
	Groups    []string `param:"consumer_groups" help:"with offsets_plan: the groups to move, names or globs; empty: every group the backup's snapshot (or, for cluster-scan, the source cluster) has offsets of on the restored topics"`
	Timestamp int64    `param:"offset_reset_timestamp" default:"-1" help:"with the timestamp strategy: epoch milliseconds"`
	Manual    []string `param:"manual_offsets" help:"with the manual strategy: GROUP:TOPIC:PARTITION:OFFSET, each a target topic's partition and the offset the group resumes at"`
	Source    []string `param:"source_cluster_bootstrap_servers" help:"with the cluster-scan strategy: brokers of the live source cluster (reached with the target's security settings)"`
	BackupID  string   `param:"offsets_backup_id" help:"with offsets_plan: the backup's id, to name in the plan"`
}

// modes says how many of the offset modes are set.
func (c *offsetsConfig) modes() int {
	n := 0
	for _, f := range []string{c.Plan, c.Execute, c.Rollback} {
		if f != "" {
			n++
		}
	}
	return n
}

// check checks the parameters of the offset modes.
func (c *offsetsConfig) check() param.Errors {
	var errs param.Errors
	if c.modes() > 1 {
		errs = append(errs, param.Errorf("offsets_plan", "offsets_plan, offsets_execute and offsets_rollback are modes of their own: set one"))
	}
	if err := restore.CheckStrategy(c.Strategy); err != nil {
		errs = append(errs, param.Errorf("consumer_group_strategy", "%v", err))
	}
	if err := restore.CheckGroupPatterns(c.Groups); err != nil {
		errs = append(errs, param.Errorf("consumer_groups", "%v", err))
	}
	if _, err := parseManual(c.Manual); err != nil {
		errs = append(errs, param.Errorf("manual_offsets", "%v", err))
	}
	if c.Plan == "" {
		return errs
	}
	switch c.Strategy {
	case restore.StrategySkip:
		errs = append(errs, param.Errorf("consumer_group_strategy", "is skip, which plans nothing; pick the strategy to plan with"))
	case restore.StrategyTimestamp:
		if c.Timestamp < 0 {
			errs = append(errs, param.Errorf("offset_reset_timestamp", "is missing: the timestamp strategy needs the time to put the groups at, epoch milliseconds"))
		}
	case restore.StrategyClusterScan:
		if len(c.Source) == 0 {
			errs = append(errs, param.Errorf("source_cluster_bootstrap_servers", "is missing: the cluster-scan strategy reads the groups' offsets from the source cluster; list its brokers"))
		}
	case restore.StrategyManual:
		if len(c.Manual) == 0 {
			errs = append(errs, param.Errorf("manual_offsets", "is missing: the manual strategy takes the offsets listed, GROUP:TOPIC:PARTITION:OFFSET"))
		}
	}
	return errs
}

// manualOffset is an entry of manual_offsets.
type manualOffset struct {
	group, topic string
	partition    int32
	offset       int64
}

// parseManual reads GROUP:TOPIC:PARTITION:OFFSET entries from the right, a
// group name may hold colons.
func parseManual(entries []string) ([]manualOffset, error) {
	var out []manualOffset
	for _, e := range entries {
		f := strings.Split(e, ":")
		if len(f) < 4 {
			return nil, fmt.Errorf("%q is not GROUP:TOPIC:PARTITION:OFFSET", e)
		}
		n := len(f)
		p, perr := strconv.ParseInt(f[n-2], 10, 32)
		o, oerr := strconv.ParseInt(f[n-1], 10, 64)
		if perr != nil || oerr != nil || p < 0 || o < 0 {
			return nil, fmt.Errorf("%q: partition and offset must be numbers from 0 up", e)
		}
		out = append(out, manualOffset{group: strings.Join(f[:n-3], ":"), topic: f[n-3], partition: int32(p), offset: o})
	}
	return out, nil
}

// offsets runs the sink's offset mode once it has the backup's metadata.
func (s *Sink) offsets(ctx context.Context, m sdk.Metadata) error {
	o := &s.off
	switch {
	case o.Plan != "":
		p, err := s.planOffsets(ctx, m)
		if err != nil {
			return err
		}
		return restore.WriteJSON(o.Plan, p)
	case o.Execute != "":
		res, err := s.executePlan(ctx, o.Execute)
		if err != nil {
			return err
		}
		return s.writeOffsetReport(res)
	default:
		res, err := s.rollBack(ctx, o.Rollback)
		if err != nil {
			return err
		}
		return s.writeOffsetReport(res)
	}
}

func (s *Sink) writeOffsetReport(res restore.OffsetResult) error {
	if s.off.Report == "" {
		return nil
	}
	return restore.WriteJSON(s.off.Report, res)
}

// planOffsets computes the plan by the strategy.
func (s *Sink) planOffsets(ctx context.Context, m sdk.Metadata) (*restore.OffsetPlan, error) {
	o := &s.off
	plan := &restore.OffsetPlan{Version: restore.PlanVersion, CreatedAt: time.Now().UTC(), BackupID: o.BackupID, Strategy: o.Strategy,
		BootstrapServers: s.cfg.BootstrapServers, Groups: []string{}, Partitions: []restore.OffsetChange{}, Notes: []string{}}
	var changes []restore.OffsetChange
	var err error
	switch o.Strategy {
	case restore.StrategySnapshot, restore.StrategyClusterScan, restore.StrategyHeaders:
		changes, plan.Notes, err = s.placeGroups(ctx, m)
	case restore.StrategyTimestamp:
		plan.Timestamp = &o.Timestamp
		changes, err = s.byTimestamp(ctx, m)
	case restore.StrategyManual:
		changes, err = s.manual(ctx)
	}
	if err != nil {
		return nil, err
	}
	if len(changes) == 0 {
		return nil, fmt.Errorf("the %s strategy found no consumer group offset to set%s", o.Strategy, notesText(plan.Notes))
	}
	current, err := s.committed(ctx, changes)
	if err != nil {
		return nil, err
	}
	groups := map[string]bool{}
	for i := range changes {
		c := &changes[i]
		c.Strategy = o.Strategy
		if v, ok := current[c.Key()]; ok {
			c.CurrentOffset = &v
		}
		groups[c.Group] = true
	}
	slices.SortFunc(changes, func(a, b restore.OffsetChange) int {
		return cmp.Or(strings.Compare(a.Group, b.Group), strings.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
	})
	plan.Partitions = changes
	for g := range groups {
		plan.Groups = append(plan.Groups, g)
	}
	slices.Sort(plan.Groups)
	return plan, nil
}

func notesText(notes []string) string {
	if len(notes) == 0 {
		return ""
	}
	return ": " + strings.Join(notes, "; ")
}

// placeGroups maps the groups' committed source offsets (from the
// backup's snapshot or the live source cluster) to the target by the
// restore's offset map, or by the target's original-offset headers.
func (s *Sink) placeGroups(ctx context.Context, m sdk.Metadata) ([]restore.OffsetChange, []string, error) {
	o := &s.off
	restored := map[string]bool{}
	for _, t := range m.Topics {
		restored[t.Name] = true
	}
	var st *restore.State
	var err error
	if o.Strategy != restore.StrategyHeaders {
		if st, err = s.finishedState(); err != nil {
			return nil, nil, err
		}
	}
	var groups []sdk.GroupOffsets
	var notes []string
	if o.Strategy == restore.StrategyClusterScan {
		if groups, err = s.scanSource(ctx, restored); err != nil {
			return nil, nil, err
		}
	} else {
		if m.GroupsTakenAt.IsZero() {
			return nil, nil, fmt.Errorf("backup %q holds no consumer group snapshot, which the %s strategy reads: take backups with consumer_group_snapshot: true (--consumer-group-snapshot), or pick another strategy", o.BackupID, o.Strategy)
		}
		groups = m.Groups
	}
	if o.Strategy == restore.StrategyHeaders {
		if st, err = s.stateFromHeaders(ctx, m); err != nil {
			return nil, nil, err
		}
	}
	var out []restore.OffsetChange
	seen := map[string]bool{}
	for _, g := range groups {
		if len(o.Groups) > 0 && !restore.MatchGroup(o.Groups, g.Group) {
			continue
		}
		seen[g.Group] = true
		committed := map[sdk.TopicPartition]int64{}
		for _, c := range g.Offsets {
			if restored[c.Topic] {
				committed[sdk.TopicPartition{Topic: c.Topic, Partition: c.Partition}] = c.Offset
			}
		}
		if len(committed) == 0 {
			if len(o.Groups) > 0 {
				notes = append(notes, fmt.Sprintf("group %q committed nothing on the restored topics", g.Group))
			}
			continue
		}
		placed := st.Place(committed)
		if len(placed) == 0 {
			notes = append(notes, fmt.Sprintf("group %q committed only on partitions the restore did not write", g.Group))
		}
		for _, p := range placed {
			out = append(out, restore.OffsetChange{Group: g.Group, Topic: p.Topic, Partition: p.Partition, NewOffset: p.Offset, Sources: p.Sources,
				Reason: p.Reason, Repeats: p.Repeats, RepeatsExact: p.RepeatsExact})
		}
	}
	for _, pat := range o.Groups {
		if !isGlob(pat) && !seen[pat] {
			where := "the backup's snapshot"
			if o.Strategy == restore.StrategyClusterScan {
				where = "the source cluster"
			}
			notes = append(notes, fmt.Sprintf("group %q has no offsets in %s", pat, where))
		}
	}
	return out, notes, nil
}

// finishedState loads the restore's state, which must be finished: before,
// the rule would put groups before records not restored yet.
func (s *Sink) finishedState() (*restore.State, error) {
	if s.cfg.RestoreState == "" {
		return nil, errors.New("the offset map is the restore's: set restore_state")
	}
	st, err := restore.Load(s.cfg.RestoreState)
	if err != nil {
		return nil, err
	}
	if st == nil {
		return nil, fmt.Errorf("no restore state at %s: run the restore first, with the same config (its offset map tells where each record landed)", s.cfg.RestoreState)
	}
	if st.Finished == nil {
		return nil, fmt.Errorf("the restore of %s has not finished: run it to the end first (offsets set now would point before records not restored yet)", s.cfg.RestoreState)
	}
	return st, nil
}

// scanSource reads the groups' committed offsets on the restored topics
// from the live source cluster.
func (s *Sink) scanSource(ctx context.Context, topics map[string]bool) ([]sdk.GroupOffsets, error) {
	cl, adm, err := connect(ctx, s.off.Source, s.cfg.ConnectTimeout, &s.sec, func(error) {})
	if err != nil {
		return nil, fmt.Errorf("source cluster: %w", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout)
	defer cancel()
	listed, err := adm.ListGroups(ctx)
	if err != nil {
		return nil, fmt.Errorf("source cluster: list groups: %w", err)
	}
	var out []sdk.GroupOffsets
	for g, r := range adm.FetchManyOffsets(ctx, listed.Groups()...) {
		if r.Err != nil {
			return nil, fmt.Errorf("source cluster: offsets of group %q: %w", g, r.Err)
		}
		got := sdk.GroupOffsets{Group: g}
		r.Fetched.Each(func(o kadm.OffsetResponse) {
			if topics[o.Topic] && o.Err == nil && o.At >= 0 {
				got.Offsets = append(got.Offsets, sdk.GroupOffset{Topic: o.Topic, Partition: o.Partition, Offset: o.At})
			}
		})
		if len(got.Offsets) > 0 {
			out = append(out, got)
		}
	}
	slices.SortFunc(out, func(a, b sdk.GroupOffsets) int { return strings.Compare(a.Group, b.Group) })
	return out, nil
}

// stateFromHeaders rebuilds an offset map from the target's records: the
// x-original-partition and x-original-offset headers a restore with
// include_original_offset_header adds say where each came from.
func (s *Sink) stateFromHeaders(ctx context.Context, m sdk.Metadata) (*restore.State, error) {
	sources := map[string][]string{} // target topic → source topics
	for _, t := range m.Topics {
		tt := s.m.Topic(t.Name)
		sources[tt] = append(sources[tt], t.Name)
	}
	var names []string
	for tt, ss := range sources {
		if len(ss) > 1 {
			return nil, fmt.Errorf("target topic %q gets the records of several source topics (%s), which the x-original-* headers do not tell apart: use the group-snapshot strategy", tt, strings.Join(ss, ", "))
		}
		names = append(names, tt)
	}
	starts, ends, err := s.bounds(ctx, names)
	if err != nil {
		return nil, err
	}
	st := &restore.State{}
	read := map[string]map[int32]kgo.Offset{}
	until := map[sdk.TopicPartition]int64{}
	targets := map[sdk.TopicPartition]*restore.Target{}
	ends.Each(func(e kadm.ListedOffset) {
		start, _ := starts.Lookup(e.Topic, e.Partition)
		tg := &restore.Target{Topic: e.Topic, Partition: e.Partition, Start: start.Offset, Base: start.Offset, Next: e.Offset}
		st.Targets = append(st.Targets, tg)
		tp := sdk.TopicPartition{Topic: e.Topic, Partition: e.Partition}
		targets[tp] = tg
		if e.Offset > start.Offset {
			if read[e.Topic] == nil {
				read[e.Topic] = map[int32]kgo.Offset{}
			}
			read[e.Topic][e.Partition] = kgo.NewOffset().At(start.Offset)
			until[tp] = e.Offset
		}
	})
	if err := s.readHeaders(ctx, read, until, targets, sources); err != nil {
		return nil, err
	}
	return st, nil
}

// bounds lists the start and end offsets of the target topics.
func (s *Sink) bounds(ctx context.Context, names []string) (starts, ends kadm.ListedOffsets, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout)
	defer cancel()
	if starts, err = s.adm.ListStartOffsets(ctx, names...); err == nil {
		if ends, err = s.adm.ListEndOffsets(ctx, names...); err == nil {
			err = errors.Join(starts.Error(), ends.Error())
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("list the offsets of the target topics %s: %w", strings.Join(names, ", "), err)
	}
	return starts, ends, nil
}

// readHeaders reads the target partitions of read up to until and adds
// each record's original position to its target's offset map.
func (s *Sink) readHeaders(ctx context.Context, read map[string]map[int32]kgo.Offset, until map[sdk.TopicPartition]int64, targets map[sdk.TopicPartition]*restore.Target, sources map[string][]string) error {
	if len(read) == 0 {
		return nil
	}
	rd, _, err := connect(ctx, s.cfg.BootstrapServers, s.cfg.ConnectTimeout, &s.sec, func(error) {}, kgo.ConsumePartitions(read))
	if err != nil {
		return err
	}
	defer rd.Close()
	var bad error
	for len(until) > 0 && bad == nil {
		fs := rd.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("read the target's original-offset headers: %w", err)
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) { ferr = fmt.Errorf("read %s/%d: %w", t, p, err) })
		if ferr != nil {
			return ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			tp := sdk.TopicPartition{Topic: r.Topic, Partition: r.Partition}
			end, ok := until[tp]
			if !ok || bad != nil {
				return
			}
			srcP, srcO := int64(-1), int64(-1)
			for _, h := range r.Headers {
				switch h.Key {
				case "x-original-partition":
					srcP, _ = strconv.ParseInt(string(h.Value), 10, 32)
				case "x-original-offset":
					srcO, _ = strconv.ParseInt(string(h.Value), 10, 64)
				}
			}
			if srcP < 0 || srcO < 0 {
				bad = fmt.Errorf("target record %s/%d offset %d has no x-original-partition and x-original-offset headers: the header-based strategy needs a restore made with include_original_offset_header (--include-original-offset-header); use group-snapshot otherwise",
					tp.Topic, tp.Partition, r.Offset)
				return
			}
			targets[tp].Add(sources[tp.Topic][0], int32(srcP), srcO, r.Offset, true)
			if r.Offset >= end-1 {
				delete(until, tp)
			}
		})
	}
	if bad != nil {
		return bad
	}
	for _, t := range targets {
		// The end, where a group that processed everything resumes, is
		// the partition's end, not just past its last record.
		t.Next = max(t.Next, t.Base)
	}
	return nil
}

// byTimestamp puts each group at the first record of each target
// partition with a timestamp at or after the time (Kafka's
// offsets-for-times; the end where there is none).
func (s *Sink) byTimestamp(ctx context.Context, m sdk.Metadata) ([]restore.OffsetChange, error) {
	groups, err := s.namedGroups(ctx, m)
	if err != nil {
		return nil, err
	}
	mapped := s.m.Metadata(m)
	var names []string
	for _, t := range mapped.Topics {
		names = append(names, t.Name)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout)
	defer cancel()
	listed, err := s.adm.ListOffsetsAfterMilli(ctx, s.off.Timestamp, names...)
	if err == nil {
		err = listed.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("offsets for time %d of the target topics: %w", s.off.Timestamp, err)
	}
	var out []restore.OffsetChange
	for _, g := range groups {
		listed.Each(func(l kadm.ListedOffset) {
			out = append(out, restore.OffsetChange{Group: g, Topic: l.Topic, Partition: l.Partition, NewOffset: l.Offset, Sources: []restore.SourceOffset{},
				Reason: fmt.Sprintf("the first record with a timestamp at or after %s (%d), or the end", time.UnixMilli(s.off.Timestamp).UTC().Format(time.RFC3339Nano), s.off.Timestamp), RepeatsExact: true})
		})
	}
	return out, nil
}

// namedGroups are the groups the timestamp strategy moves: those
// consumer_groups names, its globs matched against the groups of the
// backup's snapshot and of the target cluster; without consumer_groups,
// the snapshot's groups that consumed a restored topic.
func (s *Sink) namedGroups(ctx context.Context, m sdk.Metadata) ([]string, error) {
	restored := map[string]bool{}
	for _, t := range m.Topics {
		restored[t.Name] = true
	}
	known := map[string]bool{}
	for _, g := range m.Groups {
		for _, o := range g.Offsets {
			if restored[o.Topic] {
				known[g.Group] = true
			}
		}
	}
	if len(s.off.Groups) == 0 {
		if len(known) == 0 {
			return nil, fmt.Errorf("no group to move: name them with consumer_groups (--groups); the backup's snapshot has none that consumed the restored topics")
		}
		return slices.Sorted(func(yield func(string) bool) {
			for g := range known {
				if !yield(g) {
					return
				}
			}
		}), nil
	}
	for _, g := range m.Groups {
		known[g.Group] = true
	}
	lctx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout)
	defer cancel()
	if listed, err := s.adm.ListGroups(lctx); err == nil {
		for _, g := range listed.Groups() {
			known[g] = true
		}
	}
	var out []string
	for _, p := range s.off.Groups {
		if !isGlob(p) {
			out = append(out, p)
			continue
		}
		for g := range known {
			if restore.MatchGroup([]string{p}, g) {
				out = append(out, g)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// manual checks the listed offsets against the target partitions: each
// between the partition's start and end.
func (s *Sink) manual(ctx context.Context) ([]restore.OffsetChange, error) {
	entries, _ := parseManual(s.off.Manual)
	var names []string
	for _, e := range entries {
		names = append(names, e.topic)
	}
	starts, ends, err := s.bounds(ctx, names)
	if err != nil {
		return nil, err
	}
	var out []restore.OffsetChange
	for _, e := range entries {
		start, sok := starts.Lookup(e.topic, e.partition)
		end, eok := ends.Lookup(e.topic, e.partition)
		if !sok || !eok || start.Err != nil || end.Err != nil {
			return nil, param.Errorf("manual_offsets", "%s:%s:%d:%d: the target cluster has no partition %s/%d", e.group, e.topic, e.partition, e.offset, e.topic, e.partition)
		}
		if e.offset < start.Offset || e.offset > end.Offset {
			return nil, param.Errorf("manual_offsets", "%s:%s:%d:%d: offset %d is outside %s/%d, which holds offsets %d to %d (the end, %d, resumes after its last record)",
				e.group, e.topic, e.partition, e.offset, e.offset, e.topic, e.partition, start.Offset, end.Offset-1, end.Offset)
		}
		out = append(out, restore.OffsetChange{Group: e.group, Topic: e.topic, Partition: e.partition, NewOffset: e.offset, Sources: []restore.SourceOffset{},
			Reason: "listed in manual_offsets", RepeatsExact: true})
	}
	return out, nil
}

// committed reads what the groups of changes have committed on the target
// cluster, by OffsetChange.Key.
func (s *Sink) committed(ctx context.Context, changes []restore.OffsetChange) (map[string]int64, error) {
	var groups []string
	for _, c := range changes {
		groups = append(groups, c.Group)
	}
	slices.Sort(groups)
	groups = slices.Compact(groups)
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout)
	defer cancel()
	out := map[string]int64{}
	for g, r := range s.adm.FetchManyOffsets(ctx, groups...) {
		if r.Err != nil {
			return nil, fmt.Errorf("committed offsets of group %q on the target cluster: %w", g, r.Err)
		}
		r.Fetched.Each(func(o kadm.OffsetResponse) {
			if o.Err == nil && o.At >= 0 {
				out[restore.OffsetChange{Group: g, Topic: o.Topic, Partition: o.Partition}.Key()] = o.At
			}
		})
	}
	return out, nil
}

// refuseActive fails when a group has active members: a reset under a
// running consumer would be overwritten by its next commit.
func (s *Sink) refuseActive(ctx context.Context, groups []string) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout)
	defer cancel()
	described, err := s.adm.DescribeGroups(ctx, groups...)
	if err != nil {
		return fmt.Errorf("describe groups on the target cluster: %w", err)
	}
	var active []string
	for _, g := range described.Sorted() {
		if errors.Is(g.Err, kerr.GroupIDNotFound) {
			continue // a group that does not exist yet has no member
		}
		if g.Err != nil {
			return fmt.Errorf("describe group %q on the target cluster: %w", g.Group, g.Err)
		}
		if len(g.Members) == 0 {
			continue
		}
		var ms []string
		for _, m := range g.Members {
			ms = append(ms, fmt.Sprintf("%s (client %s on %s)", m.MemberID, m.ClientID, m.ClientHost))
		}
		slices.Sort(ms)
		active = append(active, fmt.Sprintf("group %q has %d active member(s): %s", g.Group, len(ms), strings.Join(ms, ", ")))
	}
	if len(active) > 0 {
		return fmt.Errorf("%s; stop its consumers first (nothing was changed)", strings.Join(active, "; "))
	}
	return nil
}

// executePlan commits the plan's offsets, keeping those it replaces (once:
// a second execution keeps the first one's), and reads them back.
func (s *Sink) executePlan(ctx context.Context, file string) (restore.OffsetResult, error) {
	plan, err := restore.LoadPlan(file)
	if err != nil {
		return restore.OffsetResult{}, err
	}
	if !sharesBroker(plan.BootstrapServers, s.cfg.BootstrapServers) {
		return restore.OffsetResult{}, fmt.Errorf("the plan %s is for the cluster at %s, not %s: make the plan with this config", file, strings.Join(plan.BootstrapServers, ","), strings.Join(s.cfg.BootstrapServers, ","))
	}
	if err := s.refuseActive(ctx, plan.Groups); err != nil {
		return restore.OffsetResult{}, err
	}
	current, err := s.committed(ctx, plan.Partitions)
	if err != nil {
		return restore.OffsetResult{}, err
	}
	res := restore.OffsetResult{RollbackFile: restore.RollbackFile(file)}
	if rb, err := restore.LoadRollback(res.RollbackFile); err != nil {
		return res, err
	} else if rb == nil {
		rb = &restore.Rollback{Version: restore.RollbackVersion, SavedAt: time.Now().UTC(), Offsets: []restore.PreviousOffset{}}
		for _, c := range plan.Partitions {
			prev := restore.PreviousOffset{Group: c.Group, Topic: c.Topic, Partition: c.Partition}
			if v, ok := current[c.Key()]; ok {
				prev.Offset = &v
			}
			rb.Offsets = append(rb.Offsets, prev)
		}
		if err := restore.WriteJSON(res.RollbackFile, rb); err != nil {
			return res, fmt.Errorf("keep the offsets the plan replaces: %w", err)
		}
	}
	want := map[string]*int64{}
	for _, c := range plan.Partitions {
		v := c.NewOffset
		want[c.Key()] = &v
	}
	return res, s.apply(ctx, plan.Partitions, current, want, &res)
}

// rollBack puts back the offsets the execution of the plan replaced.
func (s *Sink) rollBack(ctx context.Context, file string) (restore.OffsetResult, error) {
	res := restore.OffsetResult{RollbackFile: restore.RollbackFile(file)}
	rb, err := restore.LoadRollback(res.RollbackFile)
	if err != nil {
		return res, err
	}
	if rb == nil {
		return res, fmt.Errorf("no %s: the plan %s was never executed, so there is nothing to roll back", res.RollbackFile, file)
	}
	var changes []restore.OffsetChange
	var groups []string
	want := map[string]*int64{}
	for _, p := range rb.Offsets {
		c := restore.OffsetChange{Group: p.Group, Topic: p.Topic, Partition: p.Partition, NewOffset: -1, Strategy: "rollback", Reason: "the offset before the plan was executed", Sources: []restore.SourceOffset{}, RepeatsExact: true}
		if p.Offset != nil {
			c.NewOffset = *p.Offset
		} else {
			c.Reason = "no offset was committed before the plan was executed"
		}
		changes = append(changes, c)
		groups = append(groups, p.Group)
		want[c.Key()] = p.Offset
	}
	slices.Sort(groups)
	if err := s.refuseActive(ctx, slices.Compact(groups)); err != nil {
		return res, err
	}
	current, err := s.committed(ctx, changes)
	if err != nil {
		return res, err
	}
	return res, s.apply(ctx, changes, current, want, &res)
}

// apply makes each group's offsets what want says (nil: none committed),
// changing only those that differ, then reads them back.
func (s *Sink) apply(ctx context.Context, changes []restore.OffsetChange, current map[string]int64, want map[string]*int64, res *restore.OffsetResult) error {
	commits := map[string]kadm.Offsets{}
	deletes := map[string]kadm.TopicsSet{}
	res.Changed = []restore.OffsetChange{}
	for _, c := range changes {
		cur, has := current[c.Key()]
		w := want[c.Key()]
		if (w == nil && !has) || (w != nil && has && cur == *w) {
			res.Unchanged++
			continue
		}
		c.CurrentOffset = nil
		if has {
			c.CurrentOffset = &cur
		}
		res.Changed = append(res.Changed, c)
		if w == nil {
			ts := deletes[c.Group]
			if ts == nil {
				ts = kadm.TopicsSet{}
				deletes[c.Group] = ts
			}
			ts.Add(c.Topic, c.Partition)
			continue
		}
		offs := commits[c.Group]
		if offs == nil {
			offs = kadm.Offsets{}
			commits[c.Group] = offs
		}
		offs.Add(kadm.Offset{Topic: c.Topic, Partition: c.Partition, At: *w, LeaderEpoch: -1})
	}
	cctx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout)
	defer cancel()
	for g, offs := range commits {
		resp, err := s.adm.CommitOffsets(cctx, g, offs)
		if err == nil {
			err = resp.Error()
		}
		if err != nil {
			return fmt.Errorf("commit the offsets of group %q: %w", g, err)
		}
	}
	for g, ts := range deletes {
		resp, err := s.adm.DeleteOffsets(cctx, g, ts)
		if err == nil {
			err = resp.Error()
		}
		if err != nil {
			return fmt.Errorf("delete the offsets of group %q: %w", g, err)
		}
	}
	after, err := s.committed(ctx, changes)
	if err != nil {
		return fmt.Errorf("read back the offsets set: %w", err)
	}
	for _, c := range changes {
		got, has := after[c.Key()]
		w := want[c.Key()]
		if (w == nil) != !has || (w != nil && got != *w) {
			return fmt.Errorf("group %q on %s/%d: committed %s after the reset, want %s", c.Group, c.Topic, c.Partition, offsetText(got, has), offsetText(derefOr(w), w != nil))
		}
	}
	res.Verified = true
	return nil
}

func derefOr(p *int64) int64 {
	if p == nil {
		return -1
	}
	return *p
}

func offsetText(o int64, has bool) string {
	if !has {
		return "none"
	}
	return strconv.FormatInt(o, 10)
}

// sharesBroker says whether two broker lists name a broker in common.
func sharesBroker(a, b []string) bool {
	for _, x := range a {
		if slices.Contains(b, x) {
			return true
		}
	}
	return false
}
