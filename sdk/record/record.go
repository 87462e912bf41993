// Package record defines how kpipe holds Kafka records: the Arrow schema of a
// record batch (one topic-partition per batch), a builder that turns records
// into that schema, and the Arrow IPC encoding that crosses plugin boundaries.
//
// Fidelity rules: a nil Key, Value or header Value is null and stays null; an
// empty non-nil slice is empty and stays empty. Header order and duplicate
// header keys are kept. Timestamps are epoch milliseconds with their type.
package record

import (
	"github.com/apache/arrow-go/v18/arrow"
)

// TimestampType says where a record's timestamp came from.
type TimestampType int8

const (
	// CreateTime is set by the producer.
	CreateTime TimestampType = 0
	// LogAppendTime is set by the broker.
	LogAppendTime TimestampType = 1
)

// Header is one record header. A nil Value is a null header value.
type Header struct {
	Key   string
	Value []byte
}

// Record is one Kafka record as kpipe stores it.
type Record struct {
	Offset        int64
	Timestamp     int64 // epoch milliseconds
	TimestampType TimestampType
	Key           []byte // nil is null
	Value         []byte // nil is null (a tombstone)
	Headers       []Header
}

// Column indexes of Schema.
const (
	ColOffset = iota
	ColTimestamp
	ColTimestampType
	ColKey
	ColValue
	ColHeaders
)

// SchemaVersion is stored in the schema metadata of every batch and segment.
const SchemaVersion = "1"

var headerStruct = arrow.StructOf(
	arrow.Field{Name: "key", Type: arrow.BinaryTypes.String, Nullable: false},
	arrow.Field{Name: "value", Type: arrow.BinaryTypes.Binary, Nullable: true},
)

// Schema is the Arrow schema of a kpipe record batch.
var Schema = arrow.NewSchema([]arrow.Field{
	{Name: "offset", Type: arrow.PrimitiveTypes.Int64},
	{Name: "timestamp", Type: &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}},
	{Name: "timestamp_type", Type: arrow.PrimitiveTypes.Int8},
	{Name: "key", Type: arrow.BinaryTypes.Binary, Nullable: true},
	{Name: "value", Type: arrow.BinaryTypes.Binary, Nullable: true},
	{Name: "headers", Type: arrow.ListOfNonNullable(headerStruct)},
}, func() *arrow.Metadata {
	m := arrow.NewMetadata([]string{"kpipe.schema_version"}, []string{SchemaVersion})
	return &m
}())
