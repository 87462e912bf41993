// Package param turns a plugin's configuration struct into the parameter list
// of its spec, and decodes the host's JSON parameters into that struct with
// defaults applied and every error naming its parameter.
//
// Fields are described with struct tags:
//
//	Topics  []string `param:"topics" required:"true" help:"topic names or globs"`
//	Codec   string   `param:"compression" default:"zstd" help:"zstd, lz4 or none"`
//
// Supported field types: string, bool, int, int32, int64, time.Duration
// (written as "10s"), []string, []int, []int32, []int64, map[string]string and
// map[string]int32.
package param

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Param describes one parameter.
type Param struct {
	Name        string
	Type        string
	Required    bool
	Default     string
	Description string
}

// Error is a problem with one parameter (or the whole configuration when
// Param is empty).
type Error struct {
	Param   string
	Message string
}

func (e *Error) Error() string {
	if e.Param == "" {
		return e.Message
	}
	return fmt.Sprintf("parameter %q: %s", e.Param, e.Message)
}

// Errorf returns an *Error for the parameter name.
func Errorf(name, format string, args ...any) *Error {
	return &Error{Param: name, Message: fmt.Sprintf(format, args...)}
}

// Errors is a list of parameter errors; it is an error itself.
type Errors []*Error

func (es Errors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "; ")
}

// AsErrors extracts the parameter errors from err: an Errors, an *Error, or
// any other error as a configuration-wide Error.
func AsErrors(err error) Errors {
	if err == nil {
		return nil
	}
	var es Errors
	if errors.As(err, &es) {
		return es
	}
	var e *Error
	if errors.As(err, &e) {
		return Errors{e}
	}
	return Errors{{Message: err.Error()}}
}

var durationType = reflect.TypeOf(time.Duration(0))

func typeName(t reflect.Type) (string, bool) {
	if t == durationType {
		return "duration", true
	}
	switch t.Kind() {
	case reflect.String:
		return "string", true
	case reflect.Bool:
		return "bool", true
	case reflect.Int, reflect.Int32, reflect.Int64:
		return "int", true
	case reflect.Slice:
		switch t.Elem().Kind() {
		case reflect.String:
			return "list(string)", true
		case reflect.Int, reflect.Int32, reflect.Int64:
			return "list(int)", true
		}
	case reflect.Map:
		if t.Key().Kind() == reflect.String && t.Elem().Kind() == reflect.String {
			return "map(string)", true
		}
		if t.Key().Kind() == reflect.String && t.Elem().Kind() == reflect.Int32 {
			return "map(int)", true
		}
	}
	return "", false
}

type field struct {
	Param
	value reflect.Value // the struct field, settable
}

// Multi is several configuration structs taken as one: the plugin's
// parameters are all of theirs (a storage plugin's, say: its store's and
// the SDK's). No two may share a name.
type Multi []any

func fields(cfg any) ([]field, error) {
	if m, ok := cfg.(Multi); ok {
		var all []field
		seen := map[string]bool{}
		for _, c := range m {
			fs, err := fields(c)
			if err != nil {
				return nil, err
			}
			for _, f := range fs {
				if seen[f.Name] {
					return nil, fmt.Errorf("param: parameter %q is declared twice", f.Name)
				}
				seen[f.Name] = true
			}
			all = append(all, fs...)
		}
		return all, nil
	}
	v := reflect.ValueOf(cfg)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return nil, fmt.Errorf("param: config must be a pointer to a struct, got %T", cfg)
	}
	v = v.Elem()
	t := v.Type()
	var fs []field
	for i := range t.NumField() {
		sf := t.Field(i)
		name := sf.Tag.Get("param")
		if name == "" || name == "-" {
			continue
		}
		tn, ok := typeName(sf.Type)
		if !ok {
			return nil, fmt.Errorf("param: field %s has unsupported type %s", sf.Name, sf.Type)
		}
		fs = append(fs, field{Param: Param{
			Name:        name,
			Type:        tn,
			Required:    sf.Tag.Get("required") == "true",
			Default:     sf.Tag.Get("default"),
			Description: sf.Tag.Get("help"),
		}, value: v.Field(i)})
	}
	return fs, nil
}

// Describe returns the parameters of the configuration struct cfg points to.
func Describe(cfg any) ([]Param, error) {
	fs, err := fields(cfg)
	if err != nil {
		return nil, err
	}
	ps := make([]Param, len(fs))
	for i, f := range fs {
		ps[i] = f.Param
	}
	return ps, nil
}

// Decode fills the struct cfg points to from a JSON object of parameters:
// defaults first, then the given values. It reports every unknown, missing or
// mistyped parameter.
// A nil cfg takes no parameters.
func Decode(cfg any, paramsJSON []byte) error {
	raw := map[string]json.RawMessage{}
	if len(paramsJSON) > 0 {
		if err := json.Unmarshal(paramsJSON, &raw); err != nil {
			return Errors{{Message: fmt.Sprintf("parameters are not a JSON object: %v", err)}}
		}
	}
	if cfg == nil {
		var errs Errors
		for _, name := range slices.Sorted(maps.Keys(raw)) {
			errs = append(errs, Errorf(name, "unknown parameter; this plugin takes none"))
		}
		if len(errs) > 0 {
			return errs
		}
		return nil
	}
	fs, err := fields(cfg)
	if err != nil {
		return err
	}
	var errs Errors
	known := make([]string, 0, len(fs))
	for _, f := range fs {
		known = append(known, f.Name)
	}
	var unknown []string
	for name := range raw {
		if !slices.Contains(known, name) {
			unknown = append(unknown, name)
		}
	}
	sort.Strings(unknown)
	for _, name := range unknown {
		errs = append(errs, Errorf(name, "unknown parameter; known parameters: %s", strings.Join(known, ", ")))
	}
	for _, f := range fs {
		fv := f.value
		msg, present := raw[f.Name]
		if present && string(msg) == "null" {
			present = false
		}
		switch {
		case present:
			if err := setJSON(fv, msg); err != nil {
				errs = append(errs, Errorf(f.Name, "want %s: %v", f.Type, err))
			}
		case f.Required:
			errs = append(errs, Errorf(f.Name, "missing required parameter (%s): %s", f.Type, f.Description))
		case f.Default != "":
			if err := setDefault(fv, f.Default); err != nil {
				return fmt.Errorf("param: bad default for %q: %w", f.Name, err)
			}
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

func setJSON(fv reflect.Value, msg json.RawMessage) error {
	if fv.Type() == durationType {
		var s string
		if err := json.Unmarshal(msg, &s); err != nil {
			return fmt.Errorf("a duration such as \"10s\" or \"500ms\"")
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		fv.SetInt(int64(d))
		return nil
	}
	p := reflect.New(fv.Type())
	dec := json.NewDecoder(strings.NewReader(string(msg)))
	if err := dec.Decode(p.Interface()); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return fmt.Errorf("got a %s", te.Value)
		}
		return err
	}
	fv.Set(p.Elem())
	return nil
}

func setDefault(fv reflect.Value, s string) error {
	if fv.Type() == durationType {
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		fv.SetInt(int64(d))
		return nil
	}
	switch fv.Kind() {
	case reflect.String:
		fv.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return err
		}
		fv.SetBool(b)
	case reflect.Int, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return err
		}
		fv.SetInt(n)
	default:
		return setJSON(fv, json.RawMessage(s))
	}
	return nil
}

// CheckEpochMillis rejects a time bound that is not epoch milliseconds. -1
// means "no bound". A value below 10^11 is almost surely epoch seconds (the
// classic mistake, which would select data from 1970), one of 16 digits or
// more epoch microseconds or nanoseconds (which would select data from tens
// of thousands of years ahead): the error shows the date each reading
// gives and the value in milliseconds.
func CheckEpochMillis(name string, v int64) *Error {
	if v < -1 {
		return Errorf(name, "%d is negative; use epoch milliseconds, or leave it out for no bound", v)
	}
	var unit string
	var ms int64 // v read in unit, in milliseconds
	switch {
	case v > 0 && v < 100_000_000_000:
		unit, ms = "seconds", v*1000
	case v >= 1_000_000_000_000_000_000:
		unit, ms = "nanoseconds", v/1_000_000
	case v >= 1_000_000_000_000_000:
		unit, ms = "microseconds", v/1000
	default:
		return nil
	}
	return Errorf(name, "%d looks like epoch %s, not milliseconds: read as milliseconds it is %s, as %s %s; use 13-digit epoch milliseconds: %d",
		v, unit, dateOf(v), unit, dateOf(ms), ms)
}

// dateOf is the UTC date of epoch milliseconds, or its year when that has
// more than four digits.
func dateOf(ms int64) string {
	t := time.UnixMilli(ms).UTC()
	if t.Year() > 9999 {
		return fmt.Sprintf("the year %d", t.Year())
	}
	return t.Format(time.RFC3339Nano)
}

// ParseTimeBound reads a time window bound given as epoch milliseconds or
// as an RFC 3339 (ISO-8601) time with its zone, such as
// 2024-11-10T10:00:00Z or 2024-11-10T12:00:00.250+02:00; empty is no bound
// (-1). Epoch values are returned as given, for CheckEpochMillis.
func ParseTimeBound(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "-1" {
		return -1, nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err == nil {
		return t.UnixMilli(), nil
	}
	if _, lerr := time.Parse("2006-01-02T15:04:05.999999999", s); lerr == nil {
		return 0, fmt.Errorf("%q has no time zone; add one, such as %sZ for UTC", s, s)
	}
	return 0, fmt.Errorf("%q is neither epoch milliseconds nor an ISO-8601 time such as 2024-11-10T10:00:00Z", s)
}

// CheckTimeWindow checks the bounds of a time window, named
// time_window_start and time_window_end: each must be epoch milliseconds or
// -1 (open), and the end must not come before the start.
func CheckTimeWindow(start, end int64) Errors {
	var errs Errors
	if err := CheckEpochMillis("time_window_start", start); err != nil {
		errs = append(errs, err)
	}
	if err := CheckEpochMillis("time_window_end", end); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 && start >= 0 && end >= 0 && end < start {
		errs = append(errs, Errorf("time_window_end", "%d is before time_window_start %d", end, start))
	}
	return errs
}
