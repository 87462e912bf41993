package record

import (
	"encoding/binary"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
)

// checkLayout refuses a decoded batch whose lengths or offsets point
// outside its buffers. Arrow's reader checks few of them and a View trusts
// them all: a list offset that lies would make it allocate whatever it says.
func checkLayout(rec arrow.RecordBatch) error {
	n := int(rec.NumRows())
	for i, col := range rec.Columns() {
		name := Schema.Field(i).Name
		if col.Len() != n {
			return fmt.Errorf("column %s holds %d values for %d rows", name, col.Len(), n)
		}
		if err := checkData(col.Data(), name); err != nil {
			return err
		}
	}
	return nil
}

// checkData checks one array of the kpipe schema and its children.
func checkData(d arrow.ArrayData, name string) error {
	off, n := d.Offset(), d.Len()
	bufs := d.Buffers()
	buf := func(i int) []byte {
		if i >= len(bufs) || bufs[i] == nil {
			return nil
		}
		return bufs[i].Bytes()
	}
	size := func(i int) int { return len(buf(i)) }
	if d.NullN() > 0 && size(0) < (off+n+7)/8 {
		return fmt.Errorf("column %s: its validity bitmap of %d bytes is short of %d values", name, size(0), off+n)
	}
	switch d.DataType().ID() {
	case arrow.INT64, arrow.TIMESTAMP, arrow.INT8:
		return nil // checkShape checked their sizes against the rows
	case arrow.BINARY, arrow.STRING:
		return offsets(name, buf(1), off, n, size(2))
	case arrow.LIST:
		if len(d.Children()) != 1 {
			return fmt.Errorf("column %s: a list without its values", name)
		}
		child := d.Children()[0]
		if err := offsets(name, buf(1), off, n, child.Len()); err != nil {
			return err
		}
		return checkData(child, name)
	case arrow.STRUCT:
		for i, c := range d.Children() {
			field := d.DataType().(*arrow.StructType).Field(i).Name
			if c.Len() < off+n {
				return fmt.Errorf("column %s.%s holds %d values, its struct %d", name, field, c.Len(), off+n)
			}
			if err := checkData(c, name+"."+field); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("column %s has type %s, not one of the kpipe schema", name, d.DataType())
}

// offsets checks the int32 offsets of values [off, off+n) of a variable-width
// or list array: present, never decreasing, and within the limit (the
// bytes or child values they index).
func offsets(name string, b []byte, off, n, limit int) error {
	if n == 0 {
		return nil
	}
	if len(b)/4 < off+n+1 {
		return fmt.Errorf("column %s: %d offset bytes are short of %d values", name, len(b), off+n)
	}
	prev := int64(0)
	for i := off; i <= off+n; i++ {
		o := int64(int32(binary.LittleEndian.Uint32(b[4*i:])))
		if o < prev || o > int64(limit) {
			return fmt.Errorf("column %s: offset %d of value %d lies outside 0..%d or before the one it follows", name, o, i, limit)
		}
		prev = o
	}
	return nil
}
