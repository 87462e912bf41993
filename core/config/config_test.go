package config

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const validFile = `# a pipeline file
state_dir  = ".kpipe/state"
plugin_dir = local.plugins

locals {
  bootstrap = env("KPIPE_CFG_TEST_BOOTSTRAP", "127.0.0.1:9092")
  plugins   = "bin/plugins"
  max       = tonumber(env("KPIPE_CFG_TEST_MAX", "1000"))
  unset     = env("KPIPE_CFG_TEST_UNSET")
  empty     = env("KPIPE_CFG_TEST_EMPTY", "fallback")
}

pipeline "backup" {
  source "kafka" {
    bootstrap_servers = [local.bootstrap]
    topics            = ["orders", "payments"]
    start             = 1731236400000
    big               = 9007199254740993
  }
  transform "filter" {
    expression = "partition == 0"
  }
  transform "remap" {
    topic_mapping = { orders = "orders-copy" }
  }
  transform "filter" {
    expression = "key != null"
  }
  sink "fs" {
    path                = "backups"
    backup_id           = "daily-${local.unset}x"
    segment_max_records = local.max
    verify              = true
    ratio               = 0.5
    empty_value         = local.empty
    count_str           = tostring(12)
  }
}

pipeline "restore" {
  source "fs" {
    path = "backups"
  }
  sink "kafka" {
    bootstrap_servers = [local.bootstrap]
  }
}
`

func params(t *testing.T, s Stage) map[string]string {
	t.Helper()
	out := map[string]string{}
	for k, v := range s.Params {
		if !json.Valid(v) {
			t.Errorf("param %s is not valid JSON: %s", k, v)
		}
		out[k] = string(v)
	}
	return out
}

func sameMap(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d params %v, want %d %v", what, len(got), got, len(want), want)
	}
	for k, w := range want {
		if g, ok := got[k]; !ok || g != w {
			t.Errorf("%s: param %s = %s (present %v), want %s", what, k, g, ok, w)
		}
	}
}

func TestParseValid(t *testing.T) {
	t.Setenv("KPIPE_CFG_TEST_BOOTSTRAP", "broker:9093")
	t.Setenv("KPIPE_CFG_TEST_MAX", "")   // empty: the default applies
	t.Setenv("KPIPE_CFG_TEST_EMPTY", "") // empty: the default applies
	os.Unsetenv("KPIPE_CFG_TEST_UNSET")  // unset and no default: ""
	t.Cleanup(func() { os.Unsetenv("KPIPE_CFG_TEST_UNSET") })

	f, err := Parse("pipes.hcl", []byte(validFile))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if f.Path != "pipes.hcl" || f.StateDir != ".kpipe/state" || f.PluginDir != "bin/plugins" {
		t.Errorf("Path/StateDir/PluginDir = %q/%q/%q", f.Path, f.StateDir, f.PluginDir)
	}
	if len(f.Pipelines) != 2 {
		t.Fatalf("%d pipelines, want 2", len(f.Pipelines))
	}
	b, r := f.Pipelines[0], f.Pipelines[1]
	if b.Name != "backup" || r.Name != "restore" {
		t.Errorf("pipeline names %q, %q; want backup, restore (file order)", b.Name, r.Name)
	}
	if b.DeclRange.String() != "pipes.hcl:13,1-18" {
		t.Errorf("backup DeclRange = %s", b.DeclRange)
	}

	if b.Source.Plugin != "kafka" {
		t.Errorf("source plugin %q", b.Source.Plugin)
	}
	sameMap(t, "backup source", params(t, b.Source), map[string]string{
		"bootstrap_servers": `["broker:9093"]`,
		"topics":            `["orders","payments"]`,
		"start":             `1731236400000`,
		"big":               `9007199254740993`,
	})

	var plugins []string
	for _, tr := range b.Transforms {
		plugins = append(plugins, tr.Plugin)
	}
	if got := strings.Join(plugins, ","); got != "filter,remap,filter" {
		t.Errorf("transforms %q, want filter,remap,filter in file order", got)
	}
	if len(b.Transforms) == 3 {
		sameMap(t, "transform 0", params(t, b.Transforms[0]), map[string]string{"expression": `"partition == 0"`})
		sameMap(t, "transform 1", params(t, b.Transforms[1]), map[string]string{"topic_mapping": `{"orders":"orders-copy"}`})
		sameMap(t, "transform 2", params(t, b.Transforms[2]), map[string]string{"expression": `"key != null"`})
	}

	if b.Sink.Plugin != "fs" {
		t.Errorf("sink plugin %q", b.Sink.Plugin)
	}
	sameMap(t, "backup sink", params(t, b.Sink), map[string]string{
		"path":                `"backups"`,
		"backup_id":           `"daily-x"`,
		"segment_max_records": `1000`,
		"verify":              `true`,
		"ratio":               `0.5`,
		"empty_value":         `"fallback"`,
		"count_str":           `"12"`,
	})

	if r.Source.Plugin != "fs" || r.Sink.Plugin != "kafka" || len(r.Transforms) != 0 {
		t.Errorf("restore = %s → %d transforms → %s", r.Source.Plugin, len(r.Transforms), r.Sink.Plugin)
	}
	sameMap(t, "restore sink", params(t, r.Sink), map[string]string{"bootstrap_servers": `["broker:9093"]`})

	// Where each parameter is set: the name's range.
	ranges := map[string]string{}
	for k, rg := range b.Sink.ParamRanges {
		ranges[k] = rg.String()
	}
	sameMap(t, "sink ParamRanges", ranges, map[string]string{
		"path":                "pipes.hcl:30,5-9",
		"backup_id":           "pipes.hcl:31,5-14",
		"segment_max_records": "pipes.hcl:32,5-24",
		"verify":              "pipes.hcl:33,5-11",
		"ratio":               "pipes.hcl:34,5-10",
		"empty_value":         "pipes.hcl:35,5-16",
		"count_str":           "pipes.hcl:36,5-14",
	})
	if got := b.Source.ParamRanges["topics"].String(); got != "pipes.hcl:16,5-11" {
		t.Errorf("source topics range = %s, want pipes.hcl:16,5-11", got)
	}
	if got := b.Transforms[1].ParamRanges["topic_mapping"].Start.Line; got != 24 {
		t.Errorf("remap topic_mapping on line %d, want 24", got)
	}
	if got := b.Sink.DeclRange.String(); got != "pipes.hcl:29,3-12" {
		t.Errorf("sink DeclRange = %s, want pipes.hcl:29,3-12", got)
	}
}

func TestEnvFunction(t *testing.T) {
	src := `
locals {
  a = env("KPIPE_CFG_TEST_A", "default-a")
  b = env("KPIPE_CFG_TEST_B", "default-b")
  c = env("KPIPE_CFG_TEST_C")
}
pipeline "p" {
  source "s" {
    a = local.a
    b = local.b
    c = local.c
  }
  sink "k" {}
}
`
	t.Setenv("KPIPE_CFG_TEST_A", "from-env")
	t.Setenv("KPIPE_CFG_TEST_B", "")
	t.Setenv("KPIPE_CFG_TEST_C", "")
	f, err := Parse("e.hcl", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	sameMap(t, "env", params(t, f.Pipelines[0].Source), map[string]string{
		"a": `"from-env"`, "b": `"default-b"`, "c": `""`,
	})

	_, err = Parse("e.hcl", []byte(`
pipeline "p" {
  source "s" {
    x = env("A", "b", "c")
  }
  sink "k" {}
}
`))
	if want := `e.hcl:4,9-13: Error in function call; Call to function "env" failed: env takes a name and at most one default.`; err == nil || err.Error() != want {
		t.Errorf("env with 3 arguments: %v, want %q", err, want)
	}
}

func TestTonumber(t *testing.T) {
	t.Setenv("KPIPE_CFG_TEST_N", "-1")
	f, err := Parse("n.hcl", []byte(`
pipeline "p" {
  source "s" {
    n = tonumber(env("KPIPE_CFG_TEST_N", "5"))
    m = tonumber("1731236400000")
  }
  sink "k" {}
}
`))
	if err != nil {
		t.Fatal(err)
	}
	sameMap(t, "tonumber", params(t, f.Pipelines[0].Source), map[string]string{"n": `-1`, "m": `1731236400000`})

	_, err = Parse("n.hcl", []byte(`
pipeline "p" {
  source "s" {
    n = tonumber("abc")
  }
  sink "k" {}
}
`))
	if err == nil || !strings.HasPrefix(err.Error(), `n.hcl:4,19-22: Invalid function argument; `) || !strings.Contains(err.Error(), `cannot convert "abc" to number`) {
		t.Errorf("tonumber(abc): %v", err)
	}
}

// locRE matches the "file:line,col-col: " prefix of an error.
var locRE = regexp.MustCompile(`^[^:]+:\d+,\d+-(\d+,)?\d+: `)

func TestParseErrors(t *testing.T) {
	cases := []struct {
		name, src, want string
	}{
		{
			"unknown top-level block",
			"pipelin \"x\" {}\n",
			`f.hcl:1,1-8: Unsupported block type; Blocks of type "pipelin" are not expected here. Did you mean "pipeline"?`,
		},
		{
			"unknown top-level attribute",
			"stat_dir = \"x\"\npipeline \"p\" {\n  source \"s\" {}\n  sink \"k\" {}\n}\n",
			`f.hcl:1,1-9: Unsupported argument; An argument named "stat_dir" is not expected here. Did you mean "state_dir"?`,
		},
		{
			"unknown block inside pipeline",
			"pipeline \"p\" {\n  source \"kafka\" {}\n  sinc \"fs\" {}\n  sink \"fs\" {}\n}\n",
			`f.hcl:3,3-7: Unsupported block type; Blocks of type "sinc" are not expected here. Did you mean "sink"?`,
		},
		{
			"attribute inside pipeline",
			"pipeline \"p\" {\n  name = 1\n  source \"kafka\" {}\n  sink \"fs\" {}\n}\n",
			`f.hcl:2,3-7: Unsupported argument; An argument named "name" is not expected here.`,
		},
		{
			"nested block inside a plugin block",
			"pipeline \"p\" {\n  source \"kafka\" {\n    tls {\n      x = 1\n    }\n  }\n  sink \"fs\" {}\n}\n",
			`f.hcl:3,5-8: Unexpected "tls" block; Blocks are not allowed here.`,
		},
		{
			"missing source",
			"pipeline \"p\" {\n  sink \"fs\" {}\n}\n",
			`f.hcl:1,1-13: pipeline "p" has no source block; add one, e.g. source "kafka" { ... }`,
		},
		{
			"missing sink",
			"pipeline \"p\" {\n  source \"kafka\" {}\n}\n",
			`f.hcl:1,1-13: pipeline "p" has no sink block; add one, e.g. sink "fs" { ... }`,
		},
		{
			"two sources",
			"pipeline \"p\" {\n  source \"kafka\" {}\n  source \"fs\" {}\n  sink \"fs\" {}\n}\n",
			`f.hcl:3,3-14: pipeline "p" has a second source block; a pipeline has exactly one source`,
		},
		{
			"two sinks",
			"pipeline \"p\" {\n  source \"kafka\" {}\n  sink \"fs\" {}\n  sink \"kafka\" {}\n}\n",
			`f.hcl:4,3-15: pipeline "p" has a second sink block; a pipeline has exactly one sink`,
		},
		{
			"duplicate pipeline names",
			"pipeline \"p\" {\n  source \"kafka\" {}\n  sink \"fs\" {}\n}\n\npipeline \"p\" {\n  source \"kafka\" {}\n  sink \"fs\" {}\n}\n",
			`f.hcl:6,1-13: pipeline "p" is already defined at f.hcl:1,1-13; give each pipeline its own name`,
		},
		{
			"pipeline without a name",
			"pipeline {\n  source \"kafka\" {}\n  sink \"fs\" {}\n}\n",
			`f.hcl:1,10-11: Missing name for pipeline; All pipeline blocks must have 1 labels (name).`,
		},
		{
			"HCL syntax error",
			"pipeline \"p\" {\n  source \"kafka\" {\n    topics = [\"a\"\n  }\n}\n",
			`f.hcl:4,3-4: Missing item separator; Expected a comma to mark the beginning of the next item.`,
		},
		{
			"unknown local",
			"pipeline \"p\" {\n  source \"kafka\" {\n    x = local.nope\n  }\n  sink \"fs\" {}\n}\n",
			`f.hcl:3,14-19: Unsupported attribute; This object does not have an attribute named "nope".`,
		},
		{
			"unknown function",
			"pipeline \"p\" {\n  source \"kafka\" {\n    x = upper(\"a\")\n  }\n  sink \"fs\" {}\n}\n",
			`f.hcl:3,9-14: Call to unknown function; There is no function named "upper".`,
		},
		{
			"local defined twice",
			"locals {\n  a = 1\n}\nlocals {\n  a = 2\n}\npipeline \"p\" {\n  source \"s\" {}\n  sink \"k\" {}\n}\n",
			`f.hcl:5,3-4: local "a" is defined twice`,
		},
		{
			"state_dir not a string",
			"state_dir = 5\npipeline \"p\" {\n  source \"s\" {}\n  sink \"k\" {}\n}\n",
			`f.hcl:1,1-14: state_dir must be a string`,
		},
		{
			"duplicate parameter",
			"pipeline \"p\" {\n  source \"s\" {\n    a = 1\n    a = 2\n  }\n  sink \"k\" {}\n}\n",
			`f.hcl:4,5-6: Attribute redefined; The argument "a" was already set at f.hcl:3,5-6. Each argument may be set only once.`,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, err := Parse("f.hcl", []byte(c.src))
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", f)
			}
			if f != nil {
				t.Errorf("Parse returned a File with its error")
			}
			if err.Error() != c.want {
				t.Errorf("error:\n got %q\nwant %q", err.Error(), c.want)
			}
			if !locRE.MatchString(err.Error()) {
				t.Errorf("error %q does not start with file:line,col", err)
			}
		})
	}
}

func TestNoPipeline(t *testing.T) {
	for _, src := range []string{"", "state_dir = \"x\"\n", "locals {\n  a = 1\n}\n"} {
		_, err := Parse("f.hcl", []byte(src))
		want := `f.hcl: no pipeline block; add one such as: pipeline "backup" { source "kafka" {...} sink "fs" {...} }`
		if err == nil || err.Error() != want {
			t.Errorf("Parse(%q): %v, want %q", src, err, want)
		}
	}
}

func TestUnknownTopLevelBlockPrefix(t *testing.T) {
	_, err := Parse("FILE", []byte(`pipelin "x" {}`))
	if err == nil || !strings.HasPrefix(err.Error(), "FILE:1,1-") || !strings.Contains(err.Error(), "Unsupported block type") {
		t.Errorf("error = %v, want prefix FILE:1,1- and Unsupported block type", err)
	}
}

func TestStageWhere(t *testing.T) {
	f, err := Parse("w.hcl", []byte(`pipeline "p" {
  source "kafka" {
    topics = ["a"]
  }
  sink "fs" {}
}
`))
	if err != nil {
		t.Fatal(err)
	}
	src := f.Pipelines[0].Source
	if got := src.Where("topics"); got != "w.hcl:3,5-11: " {
		t.Errorf("Where(set param) = %q, want %q", got, "w.hcl:3,5-11: ")
	}
	if got := src.Where("bootstrap_servers"); got != "w.hcl:2,3-17: " {
		t.Errorf("Where(unset param) = %q, want the block %q", got, "w.hcl:2,3-17: ")
	}
	if got := src.Where(""); got != "w.hcl:2,3-17: " {
		t.Errorf("Where(\"\") = %q, want the block %q", got, "w.hcl:2,3-17: ")
	}
	if got := f.Pipelines[0].Sink.Where("path"); got != "w.hcl:5,3-12: " {
		t.Errorf("Where on an empty sink block = %q, want %q", got, "w.hcl:5,3-12: ")
	}
	code := Stage{Plugin: "fs", Params: map[string]json.RawMessage{"path": json.RawMessage(`"x"`)}}
	if got := code.Where("path"); got != "" {
		t.Errorf("Where on a code-built stage = %q, want empty", got)
	}
	if got := (Stage{}).Where("x"); got != "" {
		t.Errorf("Where on the zero Stage = %q, want empty", got)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "p.hcl")
	if err := os.WriteFile(path, []byte("pipeline \"p\" {\n  source \"s\" {}\n  sink \"k\" {}\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.Path != path || len(f.Pipelines) != 1 || f.Pipelines[0].Source.DeclRange.Filename != path {
		t.Errorf("Load = %+v", f)
	}
	if f.StateDir != "" || f.PluginDir != "" {
		t.Errorf("unset state_dir/plugin_dir = %q/%q, want empty", f.StateDir, f.PluginDir)
	}
	if _, err := Load(filepath.Join(dir, "missing.hcl")); err == nil || !strings.HasPrefix(err.Error(), "read pipeline file: ") || !os.IsNotExist(unwrapAll(err)) {
		t.Errorf("Load(missing) = %v", err)
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}

// TestExampleFilesParse loads the repository's example pipeline file and the
// HCL snippet of the README.
func TestExampleFilesParse(t *testing.T) {
	root := filepath.Join("..", "..")
	for _, name := range []string{"pipelines.example.hcl", "pipelines.s3.example.hcl"} {
		f, err := Load(filepath.Join(root, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(f.Pipelines) == 0 {
			t.Errorf("%s has no pipeline", name)
		}
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```hcl\n(.*?)```").FindAllSubmatch(readme, -1)
	if len(blocks) == 0 {
		t.Fatalf("README.md has no hcl block")
	}
	for i, b := range blocks {
		if _, err := Parse("README.md#hcl"+string(rune('0'+i)), b[1]); err != nil {
			t.Errorf("README hcl block %d: %v", i, err)
		}
	}
}

// TestPackageDocExampleParses parses the pipeline file shown in the package
// doc comment of config.go (the indented lines after "looks like:").
func TestPackageDocExampleParses(t *testing.T) {
	src, err := os.ReadFile("config.go")
	if err != nil {
		t.Fatal(err)
	}
	var doc []string
	in := false
	for _, l := range strings.Split(string(src), "\n") {
		switch {
		case strings.HasSuffix(l, "A pipeline file looks like:"):
			in = true
		case in && l == "//":
			if len(doc) > 0 {
				doc = append(doc, "")
			}
		case in && strings.HasPrefix(l, "//\t"):
			doc = append(doc, strings.TrimPrefix(l, "//\t"))
		case in && len(doc) > 0:
			in = false
		}
		if !in && len(doc) > 0 {
			break
		}
	}
	example := strings.TrimSpace(strings.Join(doc, "\n")) + "\n"
	if !strings.Contains(example, "pipeline \"") {
		t.Fatalf("no example pipeline file found in the package doc of config.go:\n%s", example)
	}
	if _, err := Parse("doc.hcl", []byte(example)); err != nil {
		t.Errorf("the package doc's example pipeline file does not parse:\n%s\nerror:\n%v", example, err)
	}
}
