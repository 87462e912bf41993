package restore

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kpipe/kpipe/internal/fuzzseed"
	"github.com/kpipe/kpipe/sdk"
)

// FuzzLoadState reads a restore's state file, as a resumed restore and an
// offset plan do, then places a group by it: no state may panic or hang.
func FuzzLoadState(f *testing.F) {
	fuzzseed.File(f, "restore.state.json", func(t *testing.T, file string) {
		s, err := Load(file)
		if err != nil || s == nil {
			return
		}
		s.Clone()
		s.Records()
		committed := map[sdk.TopicPartition]int64{}
		for _, src := range s.Sources {
			committed[sdk.TopicPartition{Topic: src.Topic, Partition: src.Partition}] = src.NextOffset / 2
		}
		for _, tg := range s.Targets {
			for _, r := range tg.Ranges {
				committed[sdk.TopicPartition{Topic: r.SourceTopic, Partition: r.SourcePartition}] = r.SourceOffset + r.Count/2
			}
		}
		s.Place(committed)
	})
}

// FuzzLoadPlan reads an offset plan, as offset-reset execute does.
func FuzzLoadPlan(f *testing.F) {
	fuzzseed.File(f, "plan.json", func(t *testing.T, file string) {
		p, err := LoadPlan(file)
		if err != nil {
			return
		}
		for _, c := range p.Partitions {
			if c.NewOffset < 0 || c.Group == "" || c.Topic == "" || c.Partition < 0 {
				t.Fatalf("LoadPlan took %+v", c)
			}
		}
	})
}

// FuzzLoadRollback reads a rollback file, as offset-reset rollback does.
func FuzzLoadRollback(f *testing.F) {
	fuzzseed.File(f, "plan.rollback.json", func(t *testing.T, file string) {
		r, err := LoadRollback(file)
		if err != nil || r == nil {
			return
		}
		for _, o := range r.Offsets {
			if o.Group == "" || o.Topic == "" || o.Partition < 0 || (o.Offset != nil && *o.Offset < 0) {
				t.Fatalf("LoadRollback took %+v", o)
			}
		}
	})
}

// TestWriteFuzzSeeds writes a state, a plan and a rollback file as a
// restore and offset-reset write them.
func TestWriteFuzzSeeds(t *testing.T) {
	fuzzseed.Writing(t)
	dir := t.TempDir()
	st := &State{Sources: []*Source{{Topic: "s", Partition: 0, NextOffset: 30}, {Topic: "s", Partition: 1, NextOffset: 12, NullKeys: 2}}}
	dense := &Target{Topic: "t", Partition: 0, Start: 0, Base: 0}
	for o := int64(10); o < 30; o++ {
		if o < 15 || o >= 20 {
			dense.Add("s", 0, o, dense.Next, false)
			dense.Next++
		}
	}
	sparse := &Target{Topic: "t", Partition: 1, Start: 5, Base: 5, Next: 5}
	for _, o := range []int64{0, 3, 4, 9, 11} {
		sparse.Add("s", 1, o, sparse.Next, true)
		sparse.Next++
	}
	st.Targets = []*Target{dense, sparse}
	done := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	st.Finished = &done
	for name, s := range map[string]*State{"finished": st, "empty": {}} {
		file := filepath.Join(dir, name+".json")
		if err := Save(file, s); err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(file)
		fuzzseed.Write(t, "FuzzLoadState", name, data)
	}

	cur := int64(4)
	ts := int64(1_700_000_000_000)
	plan := &OffsetPlan{Version: PlanVersion, CreatedAt: done, BackupID: "b1", Strategy: StrategySnapshot, Timestamp: &ts,
		BootstrapServers: []string{"127.0.0.1:9092"}, Groups: []string{"app"},
		Partitions: []OffsetChange{
			{Group: "app", Topic: "t", Partition: 0, CurrentOffset: &cur, NewOffset: 7, Sources: []SourceOffset{{Topic: "s", Partition: 0, Offset: 22}},
				Strategy: StrategySnapshot, Reason: "first restored record at or after source offset 22", Repeats: 0, RepeatsExact: true},
			{Group: "app", Topic: "t", Partition: 1, NewOffset: 8, Strategy: StrategySnapshot, Reason: "sparse", Repeats: 2},
		},
		Notes: []string{"group idle committed nothing on the restored topics"}}
	rb := &Rollback{Version: RollbackVersion, SavedAt: done, Offsets: []PreviousOffset{{Group: "app", Topic: "t", Partition: 0, Offset: &cur}, {Group: "app", Topic: "t", Partition: 1}}}
	for name, v := range map[string]any{"plan": plan, "rollback": rb} {
		file := filepath.Join(dir, name+".json")
		if err := WriteJSON(file, v); err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(file)
		target := map[string]string{"plan": "FuzzLoadPlan", "rollback": "FuzzLoadRollback"}[name]
		fuzzseed.Write(t, target, name, data)
	}
}

// TestDamagedFilesAreRefused: a state, a plan and a rollback file with
// entries no kpipe writes are refused at load with where they are wrong (a
// null target once crashed the resumed restore; a negative offset would
// have been committed).
func TestDamagedFilesAreRefused(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name, data, want string
		load             func(string) error
	}{
		{"state.json", `{"version":1,"targets":[null]}`, "restore state %s is damaged: targets[0] is null; move it aside to start the restore over",
			func(f string) error { _, err := Load(f); return err }},
		{"state2.json", `{"version":1,"targets":[{"topic":"t","ranges":[{"count":-5}]}]}`, "restore state %s is damaged: targets[0].ranges[0] (-5 records from source offset 0 to target offset 0) is not a range; move it aside to start the restore over",
			func(f string) error { _, err := Load(f); return err }},
		{"plan.json", `{"version":1,"partitions":[{"group":"g","topic":"t","partition":0,"new_offset":-7}]}`, "offset plan %s: partitions[0]: new_offset is -7, not 0 or more; make the plan again",
			func(f string) error { _, err := LoadPlan(f); return err }},
		{"plan2.json", `{"version":1,"partitions":[{"topic":"t","partition":0,"new_offset":7}]}`, "offset plan %s: partitions[0]: group is empty; make the plan again",
			func(f string) error { _, err := LoadPlan(f); return err }},
		{"plan.rollback.json", `{"version":1,"offsets":[{"group":"g","topic":"t","partition":-1}]}`, "rollback file %s: offsets[0]: partition is -1, not 0 or more",
			func(f string) error { _, err := LoadRollback(f); return err }},
	} {
		file := filepath.Join(dir, c.name)
		if err := os.WriteFile(file, []byte(c.data), 0o600); err != nil {
			t.Fatal(err)
		}
		if err, want := c.load(file), fmt.Sprintf(c.want, file); err == nil || err.Error() != want {
			t.Errorf("%s:\n got %v\nwant %s", c.name, err, want)
		}
	}
}
