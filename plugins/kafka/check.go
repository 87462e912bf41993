package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/kpipe/kpipe/internal/atomicfile"
	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/restore"
)

// check is the sink's check_report mode: what a restore would find and do
// on the target cluster, by the same rules as a restore (checkTopic,
// checkCreate, targetWarnings), written to the report file; nothing is
// created or written.
func (s *Sink) check(ctx context.Context, m sdk.Metadata) error {
	rep := restore.TargetCheck{Reachable: s.unreachable == nil, Topics: []restore.TopicCheck{}}
	if s.unreachable != nil {
		rep.Error = s.unreachable.Error()
		return s.writeCheck(rep)
	}
	m = s.m.Metadata(m)
	names := make([]string, 0, len(m.Topics))
	for _, t := range m.Topics {
		names = append(names, t.Name)
	}
	have, err := s.describe(ctx, names)
	if err != nil {
		rep.Reachable, rep.Error = false, err.Error()
		return s.writeCheck(rep)
	}
	dctx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout)
	c, err := describeCluster(dctx, s.adm)
	cancel()
	if err != nil {
		rep.Reachable, rep.Error = false, err.Error()
		return s.writeCheck(rep)
	}
	rep.Brokers = c.brokers
	held, err := s.held(ctx, have)
	if err != nil {
		rep.Reachable, rep.Error = false, err.Error()
		return s.writeCheck(rep)
	}
	for _, t := range m.Topics {
		tt := have[t.Name]
		tc := restore.TopicCheck{Topic: t.Name, Exists: tt.exists, Partitions: int32(tt.partitions), Needs: t.Needs(), Records: held[t.Name]}
		problem := func(err error) {
			if err != nil {
				tc.Problems = append(tc.Problems, err.Error())
			}
		}
		if tt.exists {
			tc.ReplicationFactor, tc.MinInsyncReplicas, tc.MaxMessageBytes = tt.replicas, tt.minISR, tt.maxMessage
			problem(s.checkTopic(t, tt))
			if tc.Partitions < tc.Needs && s.cfg.CreateTopics {
				tc.GrowTo = tc.Needs
			}
			if tc.Records > 0 && !s.cfg.AllowNonempty {
				problem(fmt.Errorf("target topic %q already holds %d records; a restore writes only to partitions it alone fills: restore into another topic (topic_mapping), or append after them with --allow-nonempty-target (allow_nonempty_target = true)", t.Name, tc.Records))
			}
		} else {
			// As it would be created: the backup's configs, else the
			// cluster's defaults.
			tt = targetTopic{timestampType: t.Configs["message.timestamp.type"], cleanup: t.Configs["cleanup.policy"], minISR: c.minISR, maxMessage: c.maxMessage}
			if v, ok := t.Configs["retention.ms"]; ok {
				if n, err := strconv.ParseInt(v, 10, 64); err == nil {
					tt.retention = &n
				}
			}
			if v, ok := t.Configs["min.insync.replicas"]; ok {
				tt.minISR = atoi(v)
			}
			if v, ok := t.Configs["max.message.bytes"]; ok {
				tt.maxMessage = int64(atoi(v))
			}
			tc.MinInsyncReplicas, tc.MaxMessageBytes = tt.minISR, tt.maxMessage
			if tc.ReplicationFactor = s.replication(t); tc.ReplicationFactor < 0 {
				tc.ReplicationFactor = c.defaultRF
			}
			if !s.cfg.CreateTopics {
				problem(fmt.Errorf("target topic %q does not exist; create it, or let the restore create it (create_topics = true, --create-topics)", t.Name))
			} else {
				tc.WillCreate = true
				problem(s.checkCreate(t, c))
			}
		}
		tc.TimestampType, tc.CleanupPolicy, tc.RetentionMs = tt.timestampType, tt.cleanup, tt.retention
		tc.Warnings = targetWarnings(t, tt, time.Now())
		rep.Topics = append(rep.Topics, tc)
	}
	return s.writeCheck(rep)
}

// held counts the records the existing topics of have hold.
func (s *Sink) held(ctx context.Context, have map[string]targetTopic) (map[string]int64, error) {
	var names []string
	for name, tt := range have {
		if tt.exists {
			names = append(names, name)
		}
	}
	out := map[string]int64{}
	if len(names) == 0 {
		return out, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout)
	defer cancel()
	starts, err := s.adm.ListStartOffsets(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("list start offsets of the target topics: %w", err)
	}
	ends, err := s.adm.ListEndOffsets(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("list end offsets of the target topics: %w", err)
	}
	ends.Each(func(e kadm.ListedOffset) {
		if st, ok := starts.Lookup(e.Topic, e.Partition); ok && st.Err == nil && e.Err == nil {
			out[e.Topic] += e.Offset - st.Offset
		}
	})
	return out, nil
}

func (s *Sink) writeCheck(rep restore.TargetCheck) error {
	js, err := json.MarshalIndent(rep, "", " ")
	if err != nil {
		return err
	}
	return atomicfile.Write(s.cfg.CheckReport, append(js, '\n'))
}
