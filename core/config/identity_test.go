package config

import (
	"encoding/json"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

func TestIdentityIsWhatThePipelineReadsAndWrites(t *testing.T) {
	stage := func(plugin string, kv ...string) Stage {
		s := Stage{Plugin: plugin, Params: map[string]json.RawMessage{}}
		for i := 0; i < len(kv); i += 2 {
			s.Params[kv[i]] = json.RawMessage(kv[i+1])
		}
		return s
	}
	base := Pipeline{Name: "restore",
		Source: stage("fs", "path", `"b"`, "backup_id", `"x"`, "time_window_start", `100`),
		Sink:   stage("kafka", "bootstrap_servers", `["h:1"]`)}
	same := base
	same.Name = "other name"
	same.DeclRange = hcl.Range{Filename: "f.hcl", Start: hcl.Pos{Line: 3}}
	same.Source = stage("fs", "time_window_start", ` 100 `, "backup_id", `"x"`, "path", `"b"`)
	if base.Identity() != same.Identity() {
		t.Errorf("name, place or parameter order changed the identity")
	}
	if len(base.Identity()) != 16 {
		t.Errorf("identity %q, want 16 hex digits", base.Identity())
	}
	for what, p := range map[string]Pipeline{
		"another window":  {Source: stage("fs", "path", `"b"`, "backup_id", `"x"`, "time_window_start", `101`), Sink: base.Sink},
		"another backup":  {Source: stage("fs", "path", `"b"`, "backup_id", `"y"`, "time_window_start", `100`), Sink: base.Sink},
		"another target":  {Source: base.Source, Sink: stage("kafka", "bootstrap_servers", `["h:2"]`)},
		"a transform":     {Source: base.Source, Transforms: []Stage{stage("remap", "topic_mapping", `{"a":"b"}`)}, Sink: base.Sink},
		"another plugin":  {Source: base.Source, Sink: stage("fs", "bootstrap_servers", `["h:1"]`)},
		"another mapping": {Source: base.Source, Transforms: []Stage{stage("remap", "topic_mapping", `{"a":"c"}`)}, Sink: base.Sink},
	} {
		if p.Identity() == base.Identity() {
			t.Errorf("%s: same identity", what)
		}
	}
}

func TestIdentityLeavesOutHowAClusterIsReached(t *testing.T) {
	sink := func(kv ...string) Pipeline {
		s := Stage{Plugin: "kafka", Params: map[string]json.RawMessage{"bootstrap_servers": json.RawMessage(`["h:1"]`)}}
		for i := 0; i < len(kv); i += 2 {
			s.Params[kv[i]] = json.RawMessage(kv[i+1])
		}
		return Pipeline{Source: Stage{Plugin: "fs", Params: map[string]json.RawMessage{"backup_id": json.RawMessage(`"x"`)}}, Sink: s}
	}
	base := sink()
	rotated := sink("security_protocol", `"SASL_SSL"`, "sasl_mechanism", `"SCRAM-SHA-512"`, "sasl_username", `"u"`,
		"sasl_password", `"new secret"`, "ssl_ca_location", `"/etc/ca.pem"`)
	if rotated.Identity() != base.Identity() {
		t.Errorf("security settings changed the identity: a rotated password would start the pipeline over")
	}
	for _, name := range []string{"security_protocol", "sasl_password", "ssl_key_location"} {
		if !ConnectionParam(name) {
			t.Errorf("ConnectionParam(%q) = false", name)
		}
	}
	if ConnectionParam("bootstrap_servers") || ConnectionParam("topics") {
		t.Errorf("ConnectionParam takes what the pipeline reads for how it connects")
	}
}
