package storage_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kpipe/kpipe/plugins/fs/blob"
	"github.com/kpipe/kpipe/sdk/param"
	"github.com/kpipe/kpipe/sdk/record"
	"github.com/kpipe/kpipe/sdk/storage"
)

var rawKey = bytes.Repeat([]byte{0x5a, 0x17}, 16)

// hexKey is rawKey as a key file holds it.
var hexKey = []byte(hex.EncodeToString(rawKey))

func mustKey(t *testing.T, b []byte) *storage.Key {
	t.Helper()
	k, err := storage.ParseKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// secret is the value of record i: text that shows in a segment stored
// without compression unless it is encrypted.
func secret(i int64) []byte { return fmt.Appendf(nil, "secret-value-%06d", i) }

// writePlain commits one segment of two uncompressed batches of 50 records
// each to t/0 of backup id, encrypted with key unless it is nil.
func writePlain(t *testing.T, store storage.BlobStore, id string, key *storage.Key) error {
	t.Helper()
	ctx := context.Background()
	w, err := storage.OpenWriter(ctx, store, id, storage.WriterOptions{Key: key})
	if err != nil {
		return err
	}
	defer w.Close(ctx, storage.OutcomeComplete)
	pw, err := w.Partition(ctx, "t", 0)
	if err != nil {
		t.Fatal(err)
	}
	seg := pw.NewSegment(ctx, record.None)
	for from := int64(0); from < 100; from += 50 {
		b := record.NewBuilder(nil)
		for i := from; i < from+50; i++ {
			b.AppendFields(i, 1_700_000_000_000+i, record.CreateTime, []byte("k"), secret(i))
		}
		bounds := b.Bounds()
		rec := b.NewRecord()
		if err := seg.Write(rec, bounds, from+50); err != nil {
			t.Fatal(err)
		}
		rec.Release()
		b.Release()
	}
	if _, err := seg.Commit(""); err != nil {
		t.Fatal(err)
	}
	return nil
}

// objectsHold says whether any file under dir contains what.
func objectsHold(t *testing.T, dir string, what []byte) bool {
	t.Helper()
	found := false
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if b, _ := os.ReadFile(p); bytes.Contains(b, what) {
				found = true
			}
		}
		return nil
	})
	return found
}

// readValues reads every record value of t/0.
func readValues(t *testing.T, b *storage.Backup) ([][]byte, error) {
	t.Helper()
	ctx := context.Background()
	m, err := b.Manifest(ctx, "t", 0)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, e := range m.Entries {
		r := b.Batches(ctx, "t", 0, e, nil)
		for {
			f, _, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return out, err
			}
			v, err := record.DecodeView(f)
			if err != nil {
				t.Fatal(err)
			}
			for i := range v.Len() {
				out = append(out, bytes.Clone(v.Value(i)))
			}
		}
	}
	return out, nil
}

// TestAnEncryptedBackupReadsBackAndHoldsNoPlaintext: with a key, no object
// holds a record's bytes (without one, the same segment shows them), the
// backup and its entries name the cipher and the key's id, and the records
// read back exactly with the key; without it, or with another, reading
// fails with a message that says which.
func TestAnEncryptedBackupReadsBackAndHoldsNoPlaintext(t *testing.T) {
	ctx := context.Background()
	key := mustKey(t, hexKey)
	plainDir, sealedDir := t.TempDir(), t.TempDir()
	if err := writePlain(t, blob.New(plainDir), "b", nil); err != nil {
		t.Fatal(err)
	}
	if !objectsHold(t, plainDir, secret(42)) {
		t.Fatal("the unencrypted backup does not show a record's value: the test cannot see plaintext")
	}
	store := blob.New(sealedDir)
	if err := writePlain(t, store, "b", key); err != nil {
		t.Fatal(err)
	}
	for i := range int64(100) {
		if objectsHold(t, sealedDir, secret(i)) {
			t.Fatalf("an object of the encrypted backup holds %q", secret(i))
		}
	}
	info, _ := os.ReadFile(filepath.Join(sealedDir, "b", "backup.json"))
	if want := fmt.Sprintf(`"encryption": {
    "cipher": "aes-256-gcm",
    "key_id": "%s"
  }`, key.ID); !strings.Contains(string(info), want) {
		t.Fatalf("backup.json:\n%s\nwant it to hold %s", info, want)
	}

	b, err := storage.OpenBackup(ctx, store, "b")
	if err != nil {
		t.Fatal(err)
	}
	m, err := b.Manifest(ctx, "t", 0) // the manifest needs no key
	if err != nil || len(m.Entries) != 1 || m.Records() != 100 {
		t.Fatalf("manifest without the key: %+v, %v", m, err)
	}
	e := m.Entries[0]
	if e.Encryption != "aes-256-gcm" || e.KeyID != key.ID || len(e.Batches) != 2 {
		t.Fatalf("entry: encryption %q, key %q, %d batches; want aes-256-gcm, %s, 2", e.Encryption, e.KeyID, len(e.Batches), key.ID)
	}
	if _, err := readValues(t, b); err == nil || err.Error() != fmt.Sprintf("segment b/topics/t/0/%s is encrypted (key %s): give its key with encryption_key_file or encryption_key_env", e.Segment, key.ID) {
		t.Fatalf("reading without the key: %v", err)
	}
	if err := b.UseKey(nil); err == nil || err.Error() != fmt.Sprintf(`backup "b" is encrypted (aes-256-gcm, key %s): give its key with encryption_key_file or encryption_key_env (--encryption-key-file, --encryption-key-env)`, key.ID) {
		t.Fatalf("opening without the key: %v", err)
	}
	other := mustKey(t, []byte(strings.Repeat("01", 32)))
	if err := b.UseKey(other); err == nil || err.Error() != fmt.Sprintf(`backup "b" is encrypted with key %s, and the key given is %s: wrong key; give the key the backup was written with`, key.ID, other.ID) {
		t.Fatalf("opening with another key: %v", err)
	}
	if err := b.UseKey(key); err != nil {
		t.Fatal(err)
	}
	vals, err := readValues(t, b)
	if err != nil || len(vals) != 100 {
		t.Fatalf("read %d values (%v), want 100", len(vals), err)
	}
	for i, v := range vals {
		if !bytes.Equal(v, secret(int64(i))) {
			t.Fatalf("record %d: %q, want %q", i, v, secret(int64(i)))
		}
	}

	// An entry altered to say its segment is not encrypted is refused.
	plain := e
	plain.Encryption, plain.KeyID = "", ""
	if _, _, err := b.Batches(ctx, "t", 0, plain, nil).Next(); err == nil || err.Error() != fmt.Sprintf("segment b/topics/t/0/%s is not encrypted, but the backup is: its entry was altered", e.Segment) {
		t.Fatalf("reading an entry altered to plaintext: %v", err)
	}

	// A batch whose bytes were altered (and its CRC made to match) does not
	// decrypt.
	name := filepath.Join(sealedDir, "b", "topics", "t", "0", e.Segment)
	seg, _ := os.ReadFile(name)
	bi := e.Batches[1]
	seg[bi.Start+30] ^= 1
	os.WriteFile(name, seg, 0o644)
	e.Batches[1].CRC = crc32.Checksum(seg[bi.Start:bi.Start+bi.Length], crc32.MakeTable(crc32.Castagnoli))
	r := b.Batches(ctx, "t", 0, e, []int{1})
	if _, _, err := r.Next(); err == nil || err.Error() != fmt.Sprintf("segment b/topics/t/0/%s: batch at byte %d: cannot decrypt it (cipher: message authentication failed): the key is not the one it was sealed with, or its bytes were altered", e.Segment, bi.Start) {
		t.Fatalf("reading an altered batch: %v", err)
	}
}

// TestABackupIsEncryptedFromItsFirstRunOrNever: a later run must bring the
// first run's key; a backup begun without one cannot be continued with one.
func TestABackupIsEncryptedFromItsFirstRunOrNever(t *testing.T) {
	key := mustKey(t, hexKey)
	other := mustKey(t, []byte(strings.Repeat("01", 32)))
	store := blob.New(t.TempDir())
	if err := writePlain(t, store, "sealed", key); err != nil {
		t.Fatal(err)
	}
	if err := writePlain(t, store, "plain", nil); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		id   string
		key  *storage.Key
		want string
	}{
		{"sealed", nil, fmt.Sprintf(`backup "sealed" is encrypted (aes-256-gcm, key %s): give its key with encryption_key_file or encryption_key_env (--encryption-key-file, --encryption-key-env)`, key.ID)},
		{"sealed", other, fmt.Sprintf(`backup "sealed" is encrypted with key %s, and the key given is %s: wrong key; give the key the backup was written with`, key.ID, other.ID)},
		{"plain", key, `backup "plain" is not encrypted, and a backup is encrypted from its first run or never: back up into a new backup id to encrypt, or give no key`},
	} {
		_, err := storage.OpenWriter(context.Background(), store, c.id, storage.WriterOptions{Key: c.key})
		if err == nil || err.Error() != c.want {
			t.Errorf("open %s for writing: %v\nwant: %s", c.id, err, c.want)
		}
	}
}

// TestKeysAreReadInEveryWrittenForm: hex and base64 are one key; anything
// else (raw bytes too) is refused naming the parameter, as is an unset
// variable.
func TestKeysAreReadInEveryWrittenForm(t *testing.T) {
	want := mustKey(t, hexKey).ID
	for _, b := range [][]byte{hexKey, []byte(" " + strings.ToUpper(string(hexKey)) + "\n"), []byte(base64.StdEncoding.EncodeToString(rawKey))} {
		if k := mustKey(t, b); k.ID != want {
			t.Errorf("key %q has id %s, want %s", b, k.ID, want)
		}
	}
	if !strings.HasPrefix(want, "k-") || len(want) != 18 {
		t.Errorf("key id %q: want k- and 16 hex digits", want)
	}
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	os.WriteFile(short, rawKey, 0o600) // raw bytes: not taken
	t.Setenv("KPIPE_TEST_KEY", hex.EncodeToString(rawKey[:16]))
	for _, c := range []struct {
		src  storage.KeySource
		want string
	}{
		{storage.KeySource{File: short}, "encryption_key_file: " + short + " is not a 256-bit key: want 64 hex digits or base64 of 32 bytes (make one with: openssl rand -hex 32)"},
		{storage.KeySource{File: filepath.Join(dir, "none")}, "encryption_key_file: open " + filepath.Join(dir, "none") + ": no such file or directory"},
		{storage.KeySource{Env: "KPIPE_TEST_KEY"}, "encryption_key_env: KPIPE_TEST_KEY is not a 256-bit key: want 64 hex digits or base64 of 32 bytes (make one with: openssl rand -hex 32)"},
		{storage.KeySource{Env: "KPIPE_TEST_NO_SUCH_VAR"}, "encryption_key_env: the environment variable KPIPE_TEST_NO_SUCH_VAR is not set: set it to the key (64 hex digits or base64)"},
		{storage.KeySource{File: short, Env: "KPIPE_TEST_KEY"}, "encryption_key_env: encryption_key_file is set too: give one of them"},
	} {
		_, err := c.src.Load()
		pe, ok := err.(*param.Error)
		if !ok || pe.Param+": "+pe.Message != c.want {
			t.Errorf("load %+v: %v\nwant: %s", c.src, err, c.want)
		}
	}
	if k, err := (storage.KeySource{}).Load(); k != nil || err != nil {
		t.Errorf("no key source: %v, %v; want nothing", k, err)
	}
}
