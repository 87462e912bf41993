// Package config loads kpipe pipeline files written in HCL. Its errors point
// at file:line:column (a file without any pipeline block is named without a
// line). A pipeline file looks like:
//
//	state_dir  = ".kpipe/state"   # optional: where checkpoints live
//	plugin_dir = "bin/plugins"    # optional: where kpipe-plugin-* binaries live
//
//	pipeline "backup" {
//	  source "kafka" {
//	    bootstrap_servers = ["127.0.0.1:9092"]
//	    topics            = ["orders"]
//	  }
//	  transform "filter" { expression = "partition == 0" }   # zero or more, in order
//	  sink "fs" {
//	    path      = "backups"
//	    backup_id = "daily"
//	  }
//	}
//
// The label of source, transform and sink blocks names the plugin; the
// attributes inside are that plugin's parameters, checked against its spec
// when the pipeline starts.
//
// A locals block names values that parameters use as local.NAME. Functions:
// env("NAME") or env("NAME", "default") reads an environment variable (an
// unset or empty one gives the default, else ""), tonumber and tostring
// convert.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
	ctyjson "github.com/zclconf/go-cty/cty/json"
)

// File is a loaded pipeline file.
type File struct {
	Path      string
	StateDir  string // empty when not set
	PluginDir string // empty when not set
	Pipelines []Pipeline
}

// Pipeline is one source → transforms → sink chain.
type Pipeline struct {
	Name       string
	Source     Stage
	Transforms []Stage
	Sink       Stage
	DeclRange  hcl.Range
}

// Stage is one plugin in a pipeline with its parameters.
type Stage struct {
	Plugin string
	// Params maps parameter names to JSON values.
	Params map[string]json.RawMessage
	// DeclRange is where the stage's block starts; ParamRanges where each
	// parameter is set. Both are zero for pipelines built in code.
	DeclRange   hcl.Range
	ParamRanges map[string]hcl.Range
}

// Where returns "file:line,col: " for the parameter name (or the block when
// the parameter is not set there), or "" for pipelines built in code.
func (s Stage) Where(name string) string {
	if r, ok := s.ParamRanges[name]; ok && name != "" {
		return r.String() + ": "
	}
	if s.DeclRange.Filename != "" {
		return s.DeclRange.String() + ": "
	}
	return ""
}

var fileSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "state_dir"}, {Name: "plugin_dir"}},
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "locals"},
		{Type: "pipeline", LabelNames: []string{"name"}},
	},
}

var pipelineSchema = &hcl.BodySchema{
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "source", LabelNames: []string{"plugin"}},
		{Type: "transform", LabelNames: []string{"plugin"}},
		{Type: "sink", LabelNames: []string{"plugin"}},
	},
}

var functions = map[string]function.Function{
	"env": function.New(&function.Spec{
		Params:   []function.Parameter{{Name: "name", Type: cty.String}},
		VarParam: &function.Parameter{Name: "default", Type: cty.String},
		Type:     function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			if len(args) > 2 {
				return cty.NilVal, fmt.Errorf("env takes a name and at most one default")
			}
			v := os.Getenv(args[0].AsString())
			if v == "" && len(args) == 2 {
				v = args[1].AsString()
			}
			return cty.StringVal(v), nil
		},
	}),
	"tonumber": stdlib.MakeToFunc(cty.Number),
	"tostring": stdlib.MakeToFunc(cty.String),
}

// evalContext evaluates the locals blocks and returns the context in which
// everything else is evaluated.
func evalContext(blocks hcl.Blocks) (*hcl.EvalContext, error) {
	ctx := &hcl.EvalContext{Functions: functions}
	locals := map[string]cty.Value{}
	for _, b := range blocks {
		if b.Type != "locals" {
			continue
		}
		attrs, diags := b.Body.JustAttributes()
		if diags.HasErrors() {
			return nil, diagError(diags)
		}
		for name, attr := range attrs {
			if _, dup := locals[name]; dup {
				return nil, fmt.Errorf("%s: local %q is defined twice", attr.NameRange, name)
			}
			v, diags := attr.Expr.Value(ctx)
			if diags.HasErrors() {
				return nil, diagError(diags)
			}
			locals[name] = v
		}
	}
	ctx.Variables = map[string]cty.Value{"local": cty.ObjectVal(locals)}
	return ctx, nil
}

// Load reads and checks the pipeline file at path.
func Load(path string) (*File, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read pipeline file: %w", err)
	}
	return Parse(path, src)
}

// Parse checks the HCL text src, naming it filename in errors.
func Parse(filename string, src []byte) (*File, error) {
	p := hclparse.NewParser()
	f, diags := p.ParseHCL(src, filename)
	if diags.HasErrors() {
		return nil, diagError(diags)
	}
	content, diags := f.Body.Content(fileSchema)
	if diags.HasErrors() {
		return nil, diagError(diags)
	}
	evalCtx, err := evalContext(content.Blocks)
	if err != nil {
		return nil, err
	}
	out := &File{Path: filename}
	for name, dst := range map[string]*string{"state_dir": &out.StateDir, "plugin_dir": &out.PluginDir} {
		if attr, ok := content.Attributes[name]; ok {
			v, diags := attr.Expr.Value(evalCtx)
			if diags.HasErrors() {
				return nil, diagError(diags)
			}
			if v.Type() != cty.String || v.IsNull() {
				return nil, fmt.Errorf("%s: %s must be a string", attr.Range, name)
			}
			*dst = v.AsString()
		}
	}
	seen := map[string]hcl.Range{}
	for _, b := range content.Blocks {
		if b.Type != "pipeline" {
			continue
		}
		pl, err := parsePipeline(b, evalCtx)
		if err != nil {
			return nil, err
		}
		if prev, dup := seen[pl.Name]; dup {
			return nil, fmt.Errorf("%s: pipeline %q is already defined at %s; give each pipeline its own name", b.DefRange, pl.Name, prev)
		}
		seen[pl.Name] = b.DefRange
		out.Pipelines = append(out.Pipelines, pl)
	}
	if len(out.Pipelines) == 0 {
		return nil, fmt.Errorf("%s: no pipeline block; add one such as: pipeline \"backup\" { source \"kafka\" {...} sink \"fs\" {...} }", filename)
	}
	return out, nil
}

func parsePipeline(b *hcl.Block, evalCtx *hcl.EvalContext) (Pipeline, error) {
	pl := Pipeline{Name: b.Labels[0], DeclRange: b.DefRange}
	content, diags := b.Body.Content(pipelineSchema)
	if diags.HasErrors() {
		return pl, diagError(diags)
	}
	var sources, sinks int
	for _, sb := range content.Blocks {
		st, err := parseStage(sb, evalCtx)
		if err != nil {
			return pl, err
		}
		switch sb.Type {
		case "source":
			sources++
			if sources > 1 {
				return pl, fmt.Errorf("%s: pipeline %q has a second source block; a pipeline has exactly one source", sb.DefRange, pl.Name)
			}
			pl.Source = st
		case "transform":
			pl.Transforms = append(pl.Transforms, st)
		case "sink":
			sinks++
			if sinks > 1 {
				return pl, fmt.Errorf("%s: pipeline %q has a second sink block; a pipeline has exactly one sink", sb.DefRange, pl.Name)
			}
			pl.Sink = st
		}
	}
	if sources == 0 {
		return pl, fmt.Errorf("%s: pipeline %q has no source block; add one, e.g. source \"kafka\" { ... }", b.DefRange, pl.Name)
	}
	if sinks == 0 {
		return pl, fmt.Errorf("%s: pipeline %q has no sink block; add one, e.g. sink \"fs\" { ... }", b.DefRange, pl.Name)
	}
	return pl, nil
}

func parseStage(b *hcl.Block, evalCtx *hcl.EvalContext) (Stage, error) {
	st := Stage{
		Plugin:      b.Labels[0],
		Params:      map[string]json.RawMessage{},
		DeclRange:   b.DefRange,
		ParamRanges: map[string]hcl.Range{},
	}
	attrs, diags := b.Body.JustAttributes()
	if diags.HasErrors() {
		return st, diagError(diags)
	}
	for name, attr := range attrs {
		v, diags := attr.Expr.Value(evalCtx)
		if diags.HasErrors() {
			return st, diagError(diags)
		}
		js, err := ctyjson.Marshal(v, v.Type())
		if err != nil {
			return st, fmt.Errorf("%s: %s %q: parameter %q: %v", attr.Range, b.Type, st.Plugin, name, err)
		}
		st.Params[name] = js
		st.ParamRanges[name] = attr.NameRange
	}
	return st, nil
}

// diagError turns HCL diagnostics into one error of "file:line,col: summary;
// detail" lines.
func diagError(diags hcl.Diagnostics) error {
	var lines []string
	for _, d := range diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		line := d.Summary
		if d.Detail != "" {
			line += "; " + d.Detail
		}
		if d.Subject != nil {
			line = d.Subject.String() + ": " + line
		}
		lines = append(lines, line)
	}
	return errors.New(strings.Join(lines, "\n"))
}
