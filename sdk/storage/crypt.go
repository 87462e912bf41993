package storage

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/kpipe/kpipe/sdk/param"
)

// Encryption at rest. Each record batch of a segment is sealed on its own
// with AES-256-GCM, so that a batch is still read by its byte range:
//
//	stored batch = nonce (12 random bytes) || ciphertext || tag (16 bytes)
//
// The additional data binds a batch to its place, so that batches cannot be
// swapped between backups, segments or positions unnoticed: "<backup id>/
// <topic>/<partition>/<segment>@<start byte>". A segment entry without
// encryption in an encrypted backup is refused, so that an altered
// manifest cannot pass plaintext off as the backup's. The batch index, entries, snapshots, metadata
// and backup.json stay in the clear: listing a backup and checking that its
// objects are whole need no key, reading its records does. The CRC-32C of
// the index is that of the stored (sealed) bytes.
//
// With random nonces, one key should seal fewer than 2^32 batches (NIST SP
// 800-38D); at a batch per megabyte, that is four petabytes.

// Cipher names the encryption of sealed batches, in Entry.Encryption and
// Info.Encryption.
const Cipher = "aes-256-gcm"

const nonceSize = 12

// Key is a 256-bit key for encryption at rest, and its id: a digest of it
// that names it in backups without giving it away.
type Key struct {
	ID   string
	aead cipher.AEAD
}

// ParseKey reads a key written as 64 hex digits or as base64 of 32 bytes
// (surrounding white space ignored). Raw bytes are not taken: 32 bytes of
// text would pass for a key.
func ParseKey(b []byte) (*Key, error) {
	text := string(bytes.TrimSpace(b))
	raw, err := hex.DecodeString(text)
	if err != nil || len(raw) != 32 {
		raw, err = base64.StdEncoding.DecodeString(text)
	}
	if err != nil || len(raw) != 32 {
		return nil, errors.New("is not a 256-bit key: want 64 hex digits or base64 of 32 bytes (make one with: openssl rand -hex 32)")
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	mac := hmac.New(sha256.New, raw)
	mac.Write([]byte("kpipe key id"))
	return &Key{ID: "k-" + hex.EncodeToString(mac.Sum(nil)[:8]), aead: aead}, nil
}

// KeySource says where a key is: a file, or an environment variable. Both
// empty: no encryption.
type KeySource struct {
	File string `param:"encryption_key_file" help:"file holding the 256-bit key of encryption at rest (64 hex digits or base64 of 32 bytes); segments are sealed with AES-256-GCM per batch. Empty: no encryption (unless encryption_key_env)"`
	Env  string `param:"encryption_key_env" help:"name of an environment variable holding the 256-bit key of encryption at rest (64 hex digits or base64), instead of encryption_key_file"`
}

// Load returns the key, or nil when none is set; a *param.Error names the
// parameter that is wrong.
func (s KeySource) Load() (*Key, error) {
	switch {
	case s.File != "" && s.Env != "":
		return nil, param.Errorf("encryption_key_env", "encryption_key_file is set too: give one of them")
	case s.File != "":
		b, err := os.ReadFile(s.File)
		if err != nil {
			return nil, param.Errorf("encryption_key_file", "%v", err)
		}
		k, err := ParseKey(b)
		if err != nil {
			return nil, param.Errorf("encryption_key_file", "%s %v", s.File, err)
		}
		return k, nil
	case s.Env != "":
		v, ok := os.LookupEnv(s.Env)
		if !ok || v == "" {
			return nil, param.Errorf("encryption_key_env", "the environment variable %s is not set: set it to the key (64 hex digits or base64)", s.Env)
		}
		k, err := ParseKey([]byte(v))
		if err != nil {
			return nil, param.Errorf("encryption_key_env", "%s %v", s.Env, err)
		}
		return k, nil
	}
	return nil, nil
}

// batchAD is the additional data of the batch at start of a segment.
func batchAD(backupID, topic string, partition int32, segment string, start int64) []byte {
	return []byte(backupID + "/" + topic + "/" + strconv.Itoa(int(partition)) + "/" + segment + "@" + strconv.FormatInt(start, 10))
}

// seal appends the sealed frame to dst.
func (k *Key) seal(dst, frame, ad []byte) []byte {
	var nonce [nonceSize]byte
	rand.Read(nonce[:])
	dst = append(dst, nonce[:]...)
	return k.aead.Seal(dst, nonce[:], frame, ad)
}

// open appends the frame sealed in b to dst.
func (k *Key) open(dst, b, ad []byte) ([]byte, error) {
	if len(b) < nonceSize+k.aead.Overhead() {
		return nil, errors.New("too short to be sealed")
	}
	return k.aead.Open(dst, b[:nonceSize], b[nonceSize:], ad)
}

// checkKey says whether key reads (or, writing, writes) a backup encrypted
// as info says. A key is not needed to read a backup that is not
// encrypted, and is ignored.
func checkKey(info Info, key *Key, writing bool) error {
	switch e := info.Encryption; {
	case e == nil && key != nil && writing:
		return fmt.Errorf("backup %q is not encrypted, and a backup is encrypted from its first run or never: back up into a new backup id to encrypt, or give no key", info.BackupID)
	case e == nil:
		return nil
	case e.Cipher != Cipher:
		return fmt.Errorf("backup %q is encrypted with %q, which this kpipe cannot decrypt", info.BackupID, e.Cipher)
	case key == nil:
		return fmt.Errorf("backup %q is encrypted (%s, key %s): give its key with encryption_key_file or encryption_key_env (--encryption-key-file, --encryption-key-env)", info.BackupID, e.Cipher, e.KeyID)
	case key.ID != e.KeyID:
		return fmt.Errorf("backup %q is encrypted with key %s, and the key given is %s: wrong key; give the key the backup was written with", info.BackupID, e.KeyID, key.ID)
	}
	return nil
}
