package main

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpipe/kpipe/sdk"
)

// startAt returns where a partition's reading starts: its position, or
// the log's start when the cluster deleted the records before it (a gap
// is queued for those).
func (s *Source) startAt(st *partState, starts kadm.ListedOffsets) kgo.Offset {
	if so, ok := starts.Lookup(st.topic, st.partition); ok && so.Err == nil && so.Offset > st.next {
		s.skipTo(st, so.Offset)
	}
	return kgo.NewOffset().At(st.next)
}

// eachPartition calls fn for each fetched partition with the topic ID
// the fetch names (zero when the broker names none).
func eachPartition(fs kgo.Fetches, fn func(sdk.TopicID, kgo.FetchTopicPartition)) {
	for _, f := range fs {
		for _, t := range f.Topics {
			for i := range t.Partitions {
				fn(sdk.TopicID(t.TopicID), kgo.FetchTopicPartition{Topic: t.Topic, FetchPartition: t.Partitions[i]})
			}
		}
	}
}

// refresh looks at the cluster's topics (continuous mode): a topic that
// now matches is followed from its start, partitions added to a topic
// from theirs, and a topic re-created under its name (a new topic ID) as
// a new incarnation from its start, the old one's reading dropped. A
// deleted topic is dropped; what the backup holds of it stays. When any of
// this changes, the metadata of every followed topic goes out first.
func (s *Source) refresh(ctx context.Context) error {
	s.refreshNow, s.lastRefresh = false, time.Now()
	actx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout)
	defer cancel()
	md, err := s.adm.Metadata(actx)
	if err != nil {
		sdk.Logger().Debug("cannot look for topic changes now", "error", err.Error())
		return nil // the outage watch reports an unreachable cluster
	}
	names := s.matching(md.Topics)
	current := map[string]bool{}
	var added []*partState
	var addedTopics []string
	for _, name := range names {
		current[name] = true
		d := md.Topics[name]
		id := sdk.TopicID(d.ID)
		known, ok := s.topicIDs[name]
		have := int32(0)
		switch {
		case !ok:
			sdk.Logger().Info("new topic to back up", "topic", name, "partitions", len(d.Partitions))
		case known != id:
			sdk.Logger().Warn("topic re-created under the same name: backing up its new incarnation from its start, apart from the one before",
				"topic", name, "topic_id", id.String(), "topic_id_before", known.String())
			s.drop(name)
		default:
			for _, st := range s.parts {
				if st.topic == name {
					have = max(have, st.partition+1)
				}
			}
			if int(have) < len(d.Partitions) {
				sdk.Logger().Info("partitions added to a topic: backing them up from their start", "topic", name, "partitions", len(d.Partitions), "before", have)
			}
		}
		s.topicIDs[name] = id
		for p := have; p < int32(len(d.Partitions)); p++ {
			added = append(added, &partState{topic: name, id: id, partition: p})
		}
		if int(have) < len(d.Partitions) {
			addedTopics = append(addedTopics, name)
		}
	}
	for name := range s.topicIDs {
		if _, exists := md.Topics[name]; !exists && s.followed(name) {
			sdk.Logger().Warn("topic deleted: the backup keeps what it holds of it; one re-created under its name is backed up as a new incarnation", "topic", name)
			s.drop(name)
		}
	}
	if len(added) == 0 {
		return nil
	}
	meta, err := s.metadata(actx, md.Cluster, names, md.Topics)
	if err != nil {
		return err
	}
	starts, err := s.adm.ListStartOffsets(actx, addedTopics...)
	if err != nil {
		return fmt.Errorf("list start offsets: %w", err)
	}
	s.pending = append(s.pending, sdk.Batch{Metadata: meta})
	consume := map[string]map[int32]kgo.Offset{}
	for _, st := range added {
		s.parts[key(st.topic, st.partition)] = st
		if consume[st.topic] == nil {
			consume[st.topic] = map[int32]kgo.Offset{}
		}
		consume[st.topic][st.partition] = s.startAt(st, starts)
	}
	s.cl.AddConsumePartitions(consume)
	s.updateLag()
	return nil
}

// followed says some partition of the topic is read.
func (s *Source) followed(topic string) bool {
	for _, st := range s.parts {
		if st.topic == topic {
			return true
		}
	}
	return false
}

// drop stops reading a topic: the client forgets it (so that it can read
// another incarnation of the name), and its partitions go.
func (s *Source) drop(topic string) {
	s.cl.PurgeTopicsFromClient(topic)
	for k, st := range s.parts {
		if st.topic == topic {
			delete(s.parts, k)
		}
	}
}
