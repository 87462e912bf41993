// Package celexpr compiles CEL expressions over Kafka records and evaluates
// them row by row on a record.View, without building a map per record.
//
// Variables:
//
//	topic           string
//	partition       int
//	offset          int
//	timestamp       int     epoch milliseconds
//	timestamp_type  int     0 CreateTime, 1 LogAppendTime
//	key, value      bytes, or null
//	headers         list of {"key": string, "value": bytes or null}, in order
//
// Example: `partition in [0, 1] && timestamp >= 1731236400000 && key != null`.
package celexpr

import (
	"errors"
	"fmt"
	"strings"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/interpreter"

	"github.com/kpipe/kpipe/sdk/record"
)

// MaxCost bounds what evaluating an expression for one record may cost, in
// CEL's cost units (about one per operation, more for each byte a string
// function touches): an expression that nests comprehensions over lists
// would otherwise take as long as it likes.
const MaxCost = 1_000_000

// Program is a compiled boolean expression.
type Program struct {
	prg cel.Program
	act activation
}

var env = func() *cel.Env {
	e, err := cel.NewEnv(
		cel.Variable("topic", cel.StringType),
		cel.Variable("partition", cel.IntType),
		cel.Variable("offset", cel.IntType),
		cel.Variable("timestamp", cel.IntType),
		cel.Variable("timestamp_type", cel.IntType),
		cel.Variable("key", cel.DynType),
		cel.Variable("value", cel.DynType),
		cel.Variable("headers", cel.ListType(cel.MapType(cel.StringType, cel.DynType))),
	)
	if err != nil {
		panic(err)
	}
	return e
}()

// Compile checks that expr is a valid boolean CEL expression over records.
func Compile(expr string) (*Program, error) {
	if strings.TrimSpace(expr) == "" {
		return nil, errors.New("CEL expression is empty; write one that is true for the records to keep, such as key != null")
	}
	ast, iss := env.Compile(expr)
	if iss.Err() != nil {
		return nil, compileError(iss)
	}
	if ast.OutputType() != cel.BoolType && ast.OutputType() != cel.DynType {
		return nil, fmt.Errorf("CEL expression must be true or false for a record, but it gives %s", ast.OutputType())
	}
	prg, err := env.Program(ast, cel.EvalOptions(cel.OptOptimize), cel.CostLimit(MaxCost))
	if err != nil {
		return nil, fmt.Errorf("invalid CEL expression: %w", err)
	}
	return &Program{prg: prg}, nil
}

// compileError names where each error of iss is: its line and column
// (from 1) in the expression, then what is wrong there.
func compileError(iss *cel.Issues) error {
	var msgs []string
	for _, e := range iss.Errors() {
		msgs = append(msgs, fmt.Sprintf("line %d, column %d: %s", e.Location.Line(), max(e.Location.Column(), 0)+1, e.Message))
	}
	if len(msgs) == 0 {
		return fmt.Errorf("invalid CEL expression: %w", iss.Err())
	}
	return errors.New("invalid CEL expression at " + strings.Join(msgs, "; at "))
}

// Match evaluates the expression for record i of v in topic/partition.
// Programs are not safe for concurrent use.
func (p *Program) Match(topic string, partition int32, v *record.View, i int) (bool, error) {
	p.act = activation{topic: topic, partition: partition, v: v, i: i}
	out, _, err := p.prg.Eval(&p.act)
	if c, ok := errors.AsType[interpreter.EvalCancelledError](err); ok && c.Cause == interpreter.CostLimitExceeded {
		return false, fmt.Errorf("CEL evaluation at offset %d: the expression costs more than %d for one record; write a simpler one", v.Offset(i), MaxCost)
	}
	if err != nil {
		return false, fmt.Errorf("CEL evaluation at offset %d: %w", v.Offset(i), err)
	}
	b, ok := out.(types.Bool)
	if !ok {
		return false, fmt.Errorf("CEL expression gave %v (%s) at offset %d, want true or false", out, out.Type(), v.Offset(i))
	}
	return bool(b), nil
}

// activation resolves the variables of one record straight from the view.
type activation struct {
	topic     string
	partition int32
	v         *record.View
	i         int
}

func (a *activation) ResolveName(name string) (any, bool) {
	switch name {
	case "topic":
		return types.String(a.topic), true
	case "partition":
		return types.Int(a.partition), true
	case "offset":
		return types.Int(a.v.Offset(a.i)), true
	case "timestamp":
		return types.Int(a.v.Timestamp(a.i)), true
	case "timestamp_type":
		return types.Int(a.v.TimestampType(a.i)), true
	case "key":
		return nullableBytes(a.v.Key(a.i)), true
	case "value":
		return nullableBytes(a.v.Value(a.i)), true
	case "headers":
		n := a.v.NumHeaders(a.i)
		hs := make([]ref.Val, n)
		for j := range n {
			h := a.v.Header(a.i, j)
			hs[j] = types.NewStringInterfaceMap(types.DefaultTypeAdapter, map[string]any{
				"key": types.String(h.Key), "value": nullableBytes(h.Value),
			})
		}
		return types.NewRefValList(types.DefaultTypeAdapter, hs), true
	}
	return nil, false
}

func (a *activation) Parent() interpreter.Activation { return nil }

func nullableBytes(b []byte) ref.Val {
	if b == nil {
		return types.NullValue
	}
	return types.Bytes(b)
}
