package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpipe/kpipe/internal/testkit"
)

// secureSeed writes records with keys, headers and timestamps to a new
// topic over the plain listener and returns them as stored.
func secureSeed(t *testing.T, addr, topic string, n int) []*kgo.Record {
	t.Helper()
	testkit.CreateTopic(t, addr, topic, 3)
	ts := time.Now().Add(-time.Hour).UnixMilli()
	var recs []*kgo.Record
	for i := range n {
		recs = append(recs, &kgo.Record{Topic: topic, Partition: int32(i % 3), Key: []byte(fmt.Sprintf("k%d", i)),
			Value: bytes.Repeat([]byte{byte(i)}, 10+i%50), Timestamp: time.UnixMilli(ts + int64(i)),
			Headers: []kgo.RecordHeader{{Key: "h", Value: []byte(fmt.Sprint(i))}}})
	}
	testkit.Produce(t, addr, recs)
	return testkit.ConsumeAll(t, addr, topic)
}

// sameRecords compares two topics' records one by one: partition, offset,
// key, value, headers and timestamp.
func sameRecords(t *testing.T, got, want []*kgo.Record) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d records, want %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Partition != w.Partition || g.Offset != w.Offset || !bytes.Equal(g.Key, w.Key) || !bytes.Equal(g.Value, w.Value) ||
			!g.Timestamp.Equal(w.Timestamp) || fmt.Sprint(g.Headers) != fmt.Sprint(w.Headers) {
			t.Fatalf("record %d: got %d/%d key %q ts %v headers %v, want %d/%d key %q ts %v headers %v", i,
				g.Partition, g.Offset, g.Key, g.Timestamp, g.Headers, w.Partition, w.Offset, w.Key, w.Timestamp, w.Headers)
		}
	}
}

// secrets collects everything runs printed, and checks that no secret is
// in it.
type secrets struct {
	out     strings.Builder
	secrets []string
}

func (s *secrets) run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	code, stdout, stderr := kpipe(t, append([]string{"--log-level", "debug"}, args...)...)
	s.out.WriteString(stdout + stderr)
	return code, stdout, stderr
}

// check greps what the runs printed, and the files under dirs, for every
// secret.
func (s *secrets) check(t *testing.T, dirs ...string) {
	t.Helper()
	texts := map[string]string{"the output of the runs": s.out.String()}
	for _, dir := range dirs {
		for _, path := range filesUnder(dir) {
			data, _ := os.ReadFile(path)
			texts[path] = string(data)
		}
	}
	if s.out.Len() == 0 {
		t.Fatalf("nothing to look for secrets in")
	}
	for where, text := range texts {
		for _, secret := range s.secrets {
			if strings.Contains(text, secret) {
				t.Errorf("%s holds the secret %.6s...", where, secret)
			}
		}
	}
}

// TestSecureRoundTrips backs up and restores a topic over each secured
// listener of the test broker, byte-exact, with the settings given as
// flags, in a YAML config, and in a pipeline file; no password or token
// appears in any output, log or file.
func TestSecureRoundTrips(t *testing.T) {
	addr := testkit.Kafka(t)
	sec := testkit.Secure(t)
	token := testkit.UnsecuredJWT("kpipe-oauth", time.Now().Add(time.Hour))
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KPIPE_TEST_PLAIN_PASSWORD", sec.PlainPassword)
	t.Setenv("KPIPE_TEST_TOKEN", token)
	s := &secrets{secrets: []string{sec.ScramPassword, sec.PlainPassword, token, strings.Split(token, ".")[1]}}
	state := t.TempDir()
	var dirs []string

	cases := []struct {
		name   string
		broker string
		flags  []string // the security flags of backup and restore
		yaml   string   // when set, the backup is configured by this source.security block
	}{
		{name: "SCRAM-SHA-512", broker: sec.SASLSSL, flags: []string{"--security-protocol", "SASL_SSL", "--sasl-mechanism", "SCRAM-SHA-512",
			"--sasl-username", sec.ScramUser, "--sasl-password-file", sec.ScramPasswordFile, "--ssl-ca-location", sec.CA}},
		{name: "PLAIN", broker: sec.SASLSSL, flags: []string{"--security-protocol", "sasl_ssl", "--sasl-mechanism", "PLAIN",
			"--sasl-username", sec.PlainUser, "--sasl-password", "${KPIPE_TEST_PLAIN_PASSWORD}", "--ssl-ca-location", sec.CA},
			yaml: "    security_protocol: SASL_SSL\n    sasl_mechanism: PLAIN\n    sasl_username: " + sec.PlainUser +
				"\n    sasl_password: ${KPIPE_TEST_PLAIN_PASSWORD}\n    ssl_ca_location: " + sec.CA + "\n"},
		{name: "OAUTHBEARER", broker: sec.SASLSSL, flags: []string{"--security-protocol", "SASL_SSL", "--sasl-mechanism", "OAUTHBEARER",
			"--sasl-oauthbearer-token", "${KPIPE_TEST_TOKEN}", "--ssl-ca-location", sec.CA},
			yaml: "    security_protocol: SASL_SSL\n    sasl_mechanism: OAUTHBEARER\n    sasl_oauthbearer_token_file: " + tokenFile +
				"\n    ssl_ca_location: " + sec.CA + "\n"},
		{name: "SCRAM-SHA-256 without TLS", broker: sec.SASLPlaintext, flags: []string{"--security-protocol", "SASL_PLAINTEXT", "--sasl-mechanism", "scram-sha256",
			"--sasl-username", sec.ScramUser, "--sasl-password-file", sec.ScramPasswordFile}},
		{name: "no hostname check", broker: strings.Replace(sec.SASLSSL, "localhost", "127.0.0.1", 1), flags: []string{"--security-protocol", "SASL_SSL",
			"--sasl-mechanism", "SCRAM-SHA-512", "--sasl-username", sec.ScramUser, "--sasl-password-file", sec.ScramPasswordFile,
			"--ssl-ca-location", sec.CA, "--ssl-endpoint-identification=false"}},
		{name: "mutual TLS", broker: sec.MTLS, flags: []string{"--security-protocol", "SSL", "--ssl-ca-location", sec.CA,
			"--ssl-certificate-location", sec.ClientCert, "--ssl-key-location", sec.ClientKey}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			topic := testkit.Topic(t, "secure")
			want := secureSeed(t, addr, topic, 300)
			path := t.TempDir()
			dirs = append(dirs, path)
			backup := append([]string{"backup", "--format", "json", "--progress", "off", "--state-dir", state}, c.flags...)
			backup = append(backup, "--bootstrap-servers", c.broker, "--topics", topic, "--path", path, "--backup-id", "b")
			if c.yaml != "" {
				cfg := filepath.Join(t.TempDir(), "backup.yaml")
				text := fmt.Sprintf("mode: backup\nbackup_id: b\nsource:\n  bootstrap_servers: [%q]\n  topics: [%q]\n  security:\n%sstorage:\n  backend: filesystem\n  path: %s\n",
					c.broker, topic, c.yaml, path)
				if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
					t.Fatal(err)
				}
				backup = []string{"backup", "--format", "json", "--progress", "off", "--state-dir", state, "--config", cfg}
			}
			if code, _, stderr := s.run(t, backup...); code != 0 {
				t.Fatalf("backup: exit %d: %s", code, stderr)
			}
			if n := testkit.Records(t, path, "b"); n != 300 {
				t.Fatalf("backup holds %d records, want 300", n)
			}
			dst := testkit.Topic(t, "secure-restored")
			restore := append([]string{"restore", "--format", "json", "--progress", "off", "--state-dir", state}, c.flags...)
			restore = append(restore, "--bootstrap-servers", c.broker, "--path", path, "--backup-id", "b", "--topic-mapping", topic+"="+dst)
			if code, _, stderr := s.run(t, restore...); code != 0 {
				t.Fatalf("restore: exit %d: %s", code, stderr)
			}
			sameRecords(t, testkit.ConsumeAll(t, addr, dst), want)
		})
	}

	t.Run("pipeline file", func(t *testing.T) {
		topic := testkit.Topic(t, "secure-hcl")
		want := secureSeed(t, addr, topic, 90)
		path := t.TempDir()
		dirs = append(dirs, path)
		file := writeFile(t, fmt.Sprintf(`pipeline "backup" {
  source "kafka" {
    bootstrap_servers = [%q]
    topics = [%q]
    security_protocol = "SASL_SSL"
    sasl_mechanism = "SCRAM-SHA-512"
    sasl_username = %q
    sasl_password = env("KPIPE_TEST_SCRAM_PASSWORD")
    ssl_ca_location = %q
  }
  sink "fs" {
    path = %q
    backup_id = "b"
  }
}
`, sec.SASLSSL, topic, sec.ScramUser, sec.CA, path))
		t.Setenv("KPIPE_TEST_SCRAM_PASSWORD", sec.ScramPassword)
		if code, _, stderr := s.run(t, "run", file, "--format", "json", "--progress", "off", "--state-dir", state); code != 0 {
			t.Fatalf("run: exit %d: %s", code, stderr)
		}
		got := testkit.BackupRecords(t, path, "b")
		for i := range got {
			got[i].Topic = topic
		}
		sameRecords(t, got, want)
	})

	s.check(t, append(dirs, state)...)
}

// TestOAuthTokenRotatedMidRun runs a continuous backup over OAUTHBEARER
// with a token file whose token expires mid-run. The file gets a new token
// before that: the backup logs in with it when the broker asks again, and
// backs up what comes after the first token expired.
func TestOAuthTokenRotatedMidRun(t *testing.T) {
	addr := testkit.Kafka(t)
	sec := testkit.Secure(t)
	topic := testkit.Topic(t, "rotate")
	testkit.CreateTopic(t, addr, topic, 2)
	firstExpires := time.Now().Add(15 * time.Second)
	first, second := testkit.UnsecuredJWT("first", firstExpires), testkit.UnsecuredJWT("second", time.Now().Add(time.Hour))
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(first), 0o600); err != nil {
		t.Fatal(err)
	}
	path := t.TempDir()
	b := backupAt{path, "rot"}
	cmd := exec.Command(testkit.KpipeBinary(t), "--plugin-dir", testkit.PluginDir(t), "--log-level", "debug", "backup", "--continuous",
		"--progress", "off", "--state-dir", t.TempDir(), "--bootstrap-servers", sec.SASLSSL, "--topics", topic, "--path", path, "--backup-id", "rot",
		"--segment-max-interval", "1s", "--security-protocol", "SASL_SSL", "--sasl-mechanism", "OAUTHBEARER",
		"--sasl-oauthbearer-token-file", tokenFile, "--ssl-ca-location", sec.CA)
	var stdout, stderr testkit.SyncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	produce := func(from, n int) {
		var recs []*kgo.Record
		for i := from; i < from+n; i++ {
			recs = append(recs, &kgo.Record{Topic: topic, Partition: int32(i % 2), Key: []byte(fmt.Sprint(i)), Value: []byte("v"), Timestamp: time.UnixMilli(1_700_000_000_000 + int64(i))})
		}
		testkit.Produce(t, addr, recs)
	}
	waitFor := func(n int64) {
		deadline := time.Now().Add(60 * time.Second)
		for held(t, b) < n {
			if time.Now().After(deadline) {
				t.Fatalf("the backup holds %d of %d records after 60s; stderr:\n%s", held(t, b), n, stderr.String())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	produce(0, 100)
	waitFor(100)
	if err := os.WriteFile(tokenFile, []byte(second+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(firstExpires) + 5*time.Second)
	produce(100, 100)
	waitFor(200)
	cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitInterrupted {
		t.Fatalf("after SIGTERM: %v, want exit %d; stderr:\n%s", err, exitInterrupted, stderr.String())
	}
	if !strings.Contains(stderr.String(), "OAUTHBEARER token file changed; logging in with the new token") {
		t.Errorf("no log of the new token being used; stderr:\n%s", stderr.String())
	}
	if n := held(t, b); n != 200 {
		t.Errorf("the backup holds %d records, want 200", n)
	}
	for _, secret := range []string{first, second, strings.Split(second, ".")[1]} {
		if strings.Contains(stdout.String()+stderr.String(), secret) {
			t.Errorf("the output holds a token")
		}
	}
}

// TestSecurityErrors: a wrong password, an unknown CA, an expired client
// certificate, a broker reached by a name its certificate does not hold,
// and a mechanism the broker does not enable each fail with exit 1 and an
// error that names the broker and the setting, before anything is written.
func TestSecurityErrors(t *testing.T) {
	addr := testkit.Kafka(t)
	sec := testkit.Secure(t)
	topic := testkit.Topic(t, "secerr")
	secureSeed(t, addr, topic, 10)
	dir := t.TempDir()
	expiredCert, expiredKey, _ := sec.ClientCertificate(t, dir, "expired", time.Now().Add(-48*time.Hour), time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), true)
	_, _, otherCA := sec.ClientCertificate(t, dir, "other", time.Now().Add(-time.Hour), time.Now().Add(time.Hour), false)
	scram := func(user, password string) []string {
		return []string{"--security-protocol", "SASL_SSL", "--sasl-mechanism", "SCRAM-SHA-512", "--sasl-username", user, "--sasl-password", password, "--ssl-ca-location", sec.CA}
	}
	s := &secrets{secrets: []string{"wrong-password-7f3a", sec.ScramPassword}}
	for _, c := range []struct {
		name   string
		broker string
		flags  []string
		want   string
	}{
		{"wrong password", sec.SASLSSL, scram(sec.ScramUser, "wrong-password-7f3a"),
			`Kafka broker ` + sec.SASLSSL + ` refused the SCRAM-SHA-512 login of user "kpipe_scram": wrong user name or password; check sasl_username and sasl_password`},
		{"unknown CA", sec.SASLSSL, append(scram(sec.ScramUser, sec.ScramPassword)[:8], "--ssl-ca-location", otherCA),
			"TLS with Kafka broker " + sec.SASLSSL + " failed: its certificate is signed by an authority that ssl_ca_location (" + otherCA +
				") does not hold; set ssl_ca_location to the file of the CA that signs the brokers' certificates"},
		{"expired certificate", sec.MTLS, []string{"--security-protocol", "SSL", "--ssl-ca-location", sec.CA, "--ssl-certificate-location", expiredCert, "--ssl-key-location", expiredKey},
			"TLS with Kafka broker " + sec.MTLS + " failed: it refused the client certificate of ssl_certificate_location (" + expiredCert +
				"), which expired at 2026-01-02T03:04:05Z; renew it"},
		{"hostname mismatch", strings.Replace(sec.SASLSSL, "localhost", "127.0.0.1", 1), scram(sec.ScramUser, sec.ScramPassword),
			"TLS with Kafka broker " + strings.Replace(sec.SASLSSL, "localhost", "127.0.0.1", 1) + " failed: its certificate is for localhost, not 127.0.0.1; " +
				"list the brokers in bootstrap_servers by a name their certificates hold, or set ssl_endpoint_identification to false to skip this check"},
		{"mechanism not enabled", sec.SASLSSL, []string{"--security-protocol", "SASL_SSL", "--sasl-mechanism", "SCRAM-SHA-256", "--sasl-username", sec.ScramUser,
			"--sasl-password-file", sec.ScramPasswordFile, "--ssl-ca-location", sec.CA},
			"Kafka broker " + sec.SASLSSL + " does not enable SASL mechanism SCRAM-SHA-256 on that listener; set sasl_mechanism to one it enables"},
		{"no client certificate", sec.MTLS, []string{"--security-protocol", "SSL", "--ssl-ca-location", sec.CA},
			"TLS with Kafka broker " + sec.MTLS + " failed: it refused the handshake (bad certificate): it wants a client certificate (mutual TLS); set ssl_certificate_location and ssl_key_location"},
		{"expired token", sec.SASLSSL, []string{"--security-protocol", "SASL_SSL", "--sasl-mechanism", "OAUTHBEARER", "--ssl-ca-location", sec.CA,
			"--sasl-oauthbearer-token", testkit.UnsecuredJWT("old", time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))},
			"Kafka broker " + sec.SASLSSL + ": OAUTHBEARER login: sasl_oauthbearer_token expired at 2026-01-02T03:04:05Z; renew it"},
		{"plaintext to a TLS listener", sec.MTLS, nil,
			"Kafka broker " + sec.MTLS + " speaks TLS on that port; set security_protocol to SSL or SASL_SSL (it is PLAINTEXT)"},
		{"TLS to a plain listener", strings.Replace(addr, "127.0.0.1", "localhost", 1), []string{"--security-protocol", "SSL", "--ssl-ca-location", sec.CA},
			"TLS with Kafka broker " + strings.Replace(addr, "127.0.0.1", "localhost", 1) + " failed: it closed the connection at the first message: its listener on that port does not speak TLS; check security_protocol (SSL) against the listener"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "backups")
			args := append([]string{"backup", "--progress", "off", "--state-dir", t.TempDir(), "--bootstrap-servers", c.broker, "--topics", topic,
				"--path", path, "--backup-id", "b"}, c.flags...)
			code, _, stderr := s.run(t, args...)
			if code != 1 || errorText(stderr) != `kpipe: pipeline "backup": open source "kafka": open: `+c.want {
				t.Fatalf("backup: exit %d, error:\n%s\nwant exit 1 and:\nkpipe: pipeline \"backup\": open source \"kafka\": open: %s\nstderr:\n%s", code, errorText(stderr), c.want, stderr)
			}
			if strings.Contains(stderr, "retrying") {
				t.Errorf("a refused handshake or login was waited out as an outage:\n%s", stderr)
			}
			if files := filesUnder(path); len(files) != 0 {
				t.Errorf("the failed backup wrote %v", files)
			}
		})
	}

	t.Run("a refused run leaves the backup's last run as it was", func(t *testing.T) {
		path := t.TempDir()
		if code, _, stderr := kpipe(t, "backup", "--progress", "off", "--state-dir", t.TempDir(), "--bootstrap-servers", addr, "--topics", topic, "--path", path, "--backup-id", "b"); code != 0 {
			t.Fatalf("backup: exit %d: %s", code, stderr)
		}
		before := describeBackup(t, path, "b").LastRun
		args := append([]string{"backup", "--progress", "off", "--state-dir", t.TempDir(), "--bootstrap-servers", sec.SASLSSL, "--topics", topic,
			"--path", path, "--backup-id", "b"}, scram(sec.ScramUser, "wrong-password-7f3a")...)
		if code, _, stderr := s.run(t, args...); code != 1 {
			t.Fatalf("backup with a wrong password: exit %d, want 1: %s", code, stderr)
		}
		after := describeBackup(t, path, "b").LastRun
		if after.State != "complete" || after.Runs != 1 || !after.Started.Equal(before.Started) {
			t.Fatalf("last run after a refused one: %+v, want the first run as it was: %+v", after, before)
		}
	})

	t.Run("restore with a wrong password", func(t *testing.T) {
		path := t.TempDir()
		if code, _, stderr := kpipe(t, "backup", "--progress", "off", "--state-dir", t.TempDir(), "--bootstrap-servers", addr, "--topics", topic, "--path", path, "--backup-id", "b"); code != 0 {
			t.Fatalf("backup: exit %d: %s", code, stderr)
		}
		dst := testkit.Topic(t, "secerr-restored")
		args := append([]string{"restore", "--progress", "off", "--state-dir", t.TempDir(), "--bootstrap-servers", sec.SASLSSL, "--path", path, "--backup-id", "b",
			"--topic-mapping", topic + "=" + dst}, scram(sec.ScramUser, "wrong-password-7f3a")...)
		code, _, stderr := s.run(t, args...)
		want := `kpipe: pipeline "restore": open sink "kafka": open: Kafka broker ` + sec.SASLSSL + ` refused the SCRAM-SHA-512 login of user "kpipe_scram": wrong user name or password; check sasl_username and sasl_password`
		if code != 1 || errorText(stderr) != want {
			t.Fatalf("restore: exit %d, error:\n%s\nwant exit 1 and:\n%s", code, errorText(stderr), want)
		}
		if topics := testkit.ListTopics(t, addr); topics[dst] {
			t.Errorf("the failed restore created %s", dst)
		}
	})
	s.check(t)
}

// filesUnder lists the files under dir.
func filesUnder(dir string) []string {
	var files []string
	filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			files = append(files, path)
		}
		return nil
	})
	return files
}

// TestSecuritySettingsExitTwo: settings that cannot work are bad input,
// named, before any connection.
func TestSecuritySettingsExitTwo(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		flags []string
		want  string
	}{
		{[]string{"--security-protocol", "TLS"}, `parameter "security_protocol": "TLS" is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL`},
		{[]string{"--security-protocol", "SASL_SSL"}, `parameter "sasl_mechanism": is missing; security_protocol SASL_SSL needs one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER`},
		{[]string{"--security-protocol", "SASL_SSL", "--sasl-mechanism", "SCRAM-SHA-512", "--sasl-username", "u"},
			`parameter "sasl_password": is missing; SCRAM-SHA-512 needs a password: give sasl_password or sasl_password_file`},
		{[]string{"--sasl-mechanism", "PLAIN"}, `parameter "sasl_mechanism": is set, but security_protocol is PLAINTEXT; use SASL_SSL (or SASL_PLAINTEXT) to log in with SASL`},
		{[]string{"--security-protocol", "SSL", "--ssl-certificate-location", filepath.Join(dir, "c.pem")},
			`parameter "ssl_key_location": is missing; mutual TLS needs the private key of ssl_certificate_location`},
		{[]string{"--security-protocol", "SSL", "--ssl-ca-location", filepath.Join(dir, "none.pem")},
			`parameter "ssl_ca_location": cannot read ` + filepath.Join(dir, "none.pem") + `: no such file or directory`},
		{[]string{"--security-protocol", "SASL_SSL", "--sasl-mechanism", "PLAIN", "--sasl-username", "u", "--sasl-password-file", "not-a-file-but-a-secret"},
			`parameter "sasl_password_file": cannot read the file: no such file or directory`},
		{[]string{"--security-protocol", "SASL_SSL", "--sasl-mechanism", "OAUTHBEARER", "--sasl-oauthbearer-token", "${KPIPE_TEST_UNSET_TOKEN}"},
			`--sasl-oauthbearer-token: ${KPIPE_TEST_UNSET_TOKEN} is not set in the environment; set it, or write the value`},
	} {
		args := append([]string{"backup", "--progress", "off", "--state-dir", dir, "--bootstrap-servers", "localhost:1", "--topics", "t",
			"--path", filepath.Join(dir, "b"), "--backup-id", "b"}, c.flags...)
		code, _, stderr := kpipe(t, args...)
		if code != 2 || !strings.HasSuffix(errorText(stderr), c.want) {
			t.Errorf("%v: exit %d, error:\n%s\nwant exit 2 and an error ending:\n%s", c.flags, code, errorText(stderr), c.want)
		}
	}
}
