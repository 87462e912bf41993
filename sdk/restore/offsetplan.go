package restore

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"strings"
	"time"

	"github.com/kpipe/kpipe/internal/atomicfile"
)

// Strategies of consumer offset recovery (consumer_group_strategy).
const (
	// StrategySkip leaves the groups' offsets as they are.
	StrategySkip = "skip"
	// StrategySnapshot maps the offsets the groups had committed when the
	// backup was taken, stored with it, by the restore's offset map.
	StrategySnapshot = "group-snapshot"
	// StrategyHeaders maps the same offsets by the original-offset
	// headers on the target's records instead of the offset map.
	StrategyHeaders = "header-based"
	// StrategyTimestamp puts each group at the first record of each
	// target partition with a timestamp at or after a time, as Kafka's
	// offsets-for-times answers.
	StrategyTimestamp = "timestamp"
	// StrategyClusterScan maps the offsets the groups have committed now
	// on a live source cluster, by the offset map: for migrations.
	StrategyClusterScan = "cluster-scan"
	// StrategyManual takes the target offsets the config lists.
	StrategyManual = "manual"
)

// Strategies lists the strategies in the order the help gives them.
var Strategies = []string{StrategySkip, StrategySnapshot, StrategyHeaders, StrategyTimestamp, StrategyClusterScan, StrategyManual}

// CheckStrategy says whether s names a strategy, and if not which ones do.
func CheckStrategy(s string) error {
	for _, k := range Strategies {
		if s == k {
			return nil
		}
	}
	return fmt.Errorf("%q is not a strategy; use one of %s", s, strings.Join(Strategies, ", "))
}

// MatchGroup says whether a group name matches one of patterns (globs as
// path.Match reads them: *, ?, [...]).
func MatchGroup(patterns []string, group string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, group); ok || p == group {
			return true
		}
	}
	return false
}

// CheckGroupPatterns checks that each group pattern is a valid glob.
func CheckGroupPatterns(patterns []string) error {
	for _, p := range patterns {
		if p == "" {
			return errors.New("a group name is empty")
		}
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("%q is not a valid glob (%v)", p, err)
		}
	}
	return nil
}

// PlanVersion is the version of the offset plan's format.
const PlanVersion = 1

// OffsetPlan is a reset of consumer group offsets on the target cluster,
// computed without changing anything (kpipe offset-reset plan), to review
// and then execute. Its JSON form is stable: fields are only ever added.
type OffsetPlan struct {
	Version   int       `json:"version"`
	CreatedAt time.Time `json:"created_at"`
	BackupID  string    `json:"backup_id"`
	Strategy  string    `json:"strategy"`
	// Timestamp is the time of the timestamp strategy, epoch ms.
	Timestamp *int64 `json:"timestamp,omitempty"`
	// BootstrapServers are the target cluster's brokers.
	BootstrapServers []string `json:"bootstrap_servers"`
	// Groups are the groups the plan moves, sorted.
	Groups []string `json:"groups"`
	// Partitions holds one change per group, target topic and partition,
	// sorted by group, topic and partition.
	Partitions []OffsetChange `json:"partitions"`
	// Notes says what the plan leaves alone and why (a group that
	// committed nothing on the restored topics, say).
	Notes []string `json:"notes"`
}

// OffsetChange is the offset of one group on one target partition.
type OffsetChange struct {
	Group     string `json:"group"`
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	// CurrentOffset is what the group has committed there when the plan
	// was made; null when nothing.
	CurrentOffset *int64 `json:"current_offset"`
	NewOffset     int64  `json:"new_offset"`
	// Sources are the source partitions' committed offsets it comes from
	// (none for the timestamp and manual strategies).
	Sources      []SourceOffset `json:"sources"`
	Strategy     string         `json:"strategy"`
	Reason       string         `json:"reason"`
	Repeats      int64          `json:"repeats"`
	RepeatsExact bool           `json:"repeats_exact"`
}

// Key names the group, topic and partition of c.
func (c OffsetChange) Key() string { return fmt.Sprintf("%s %s/%d", c.Group, c.Topic, c.Partition) }

// RollbackVersion is the version of the rollback file's format.
const RollbackVersion = 1

// Rollback is what an execution of a plan replaced: each group's offsets
// before it (null: none was committed), kept beside the plan so that
// kpipe offset-reset rollback puts them back.
type Rollback struct {
	Version int              `json:"version"`
	SavedAt time.Time        `json:"saved_at"`
	Offsets []PreviousOffset `json:"offsets"`
}

// PreviousOffset is a group's offset on a target partition before an
// execution; Offset is null when none was committed.
type PreviousOffset struct {
	Group     string `json:"group"`
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    *int64 `json:"offset"`
}

// OffsetResult is what an execution or a rollback did.
type OffsetResult struct {
	// Changed are the offsets it committed (or deleted: NewOffset -1, in a
	// rollback of a partition that had none), with what they replaced.
	Changed []OffsetChange `json:"changed"`
	// Unchanged counts the offsets that already were what they should be.
	Unchanged int `json:"unchanged"`
	// Verified says the committed offsets were read back and equal the
	// plan's (or the rollback's).
	Verified bool `json:"verified"`
	// RollbackFile holds the offsets the first execution replaced.
	RollbackFile string `json:"rollback_file,omitempty"`
}

// RollbackFile is where the execution of the plan at planFile keeps the
// offsets it replaces.
func RollbackFile(planFile string) string {
	return strings.TrimSuffix(planFile, ".json") + ".rollback.json"
}

// WriteJSON replaces file with v as indented JSON, atomically.
func WriteJSON(file string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(file, append(data, '\n'))
}

// LoadPlan reads an offset plan, checking its version.
func LoadPlan(file string) (*OffsetPlan, error) {
	var p OffsetPlan
	if err := readJSON(file, "offset plan", &p); err != nil {
		return nil, err
	}
	if p.Version != PlanVersion {
		return nil, fmt.Errorf("offset plan %s has format version %d, this kpipe reads version %d", file, p.Version, PlanVersion)
	}
	for i, c := range p.Partitions {
		if err := checkOffset(c.Group, c.Topic, c.Partition, &c.NewOffset, "new_offset"); err != nil {
			return nil, fmt.Errorf("offset plan %s: partitions[%d]: %v; make the plan again", file, i, err)
		}
	}
	return &p, nil
}

// checkOffset refuses a group's offset that no plan or rollback holds: one
// without its group or topic, or a negative partition or offset (what,
// named after its field).
func checkOffset(group, topic string, partition int32, offset *int64, what string) error {
	switch {
	case group == "":
		return errors.New("group is empty")
	case topic == "":
		return errors.New("topic is empty")
	case partition < 0:
		return fmt.Errorf("partition is %d, not 0 or more", partition)
	case offset != nil && *offset < 0:
		return fmt.Errorf("%s is %d, not 0 or more", what, *offset)
	}
	return nil
}

// LoadRollback reads the offsets an execution replaced; nil when there is
// no such file.
func LoadRollback(file string) (*Rollback, error) {
	var r Rollback
	if err := readJSON(file, "rollback file", &r); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	if r.Version != RollbackVersion {
		return nil, fmt.Errorf("rollback file %s has format version %d, this kpipe reads version %d", file, r.Version, RollbackVersion)
	}
	for i, o := range r.Offsets {
		if err := checkOffset(o.Group, o.Topic, o.Partition, o.Offset, "offset"); err != nil {
			return nil, fmt.Errorf("rollback file %s: offsets[%d]: %v", file, i, err)
		}
	}
	return &r, nil
}

func readJSON(file, what string, v any) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("read %s: %w", what, err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s %s is not valid: %v", what, file, err)
	}
	return nil
}
