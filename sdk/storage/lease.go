package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
)

// DefaultLeaseTTL is how long a writer's lease lasts past its last renewal.
const DefaultLeaseTTL = 30 * time.Second

// holderGrace is how long a writer waits for a live holder on its own host
// to end before it is refused: a plugin whose host was killed exits within
// it.
const holderGrace = time.Second

// HeldError says another writer holds a backup.
type HeldError struct {
	BackupID string
	Lease    Lease
	// ExpiresIn is how long until the lease expires if its writer stops
	// renewing it now.
	ExpiresIn time.Duration
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("backup %q is being written by pid %d on host %s since %s (lease epoch %d): two writers would interleave their segments; wait for that writer to end or stop it (a lease that is not renewed expires %s after its last renewal; this one in %s)",
		e.BackupID, e.Lease.Pid, e.Lease.Host, e.Lease.Since.Format(time.RFC3339), e.Lease.Epoch, e.Lease.TTL, e.ExpiresIn.Round(time.Second))
}

// FencedError says a writer lost its lease: another took the backup over
// and this one commits nothing more.
type FencedError struct {
	BackupID string
	Epoch    int64
	// By is the lease that replaced this writer's (zero if unreadable).
	By Lease
}

func (e *FencedError) Error() string {
	return fmt.Sprintf("backup %q: this writer (lease epoch %d) lost its lease to pid %d on host %s at %s and commits nothing more",
		e.BackupID, e.Epoch, e.By.Pid, e.By.Host, e.By.Since.Format(time.RFC3339))
}

// LeaseOptions say who a writer is and how long its lease lasts.
type LeaseOptions struct {
	TTL  time.Duration // DefaultLeaseTTL when 0
	Host string        // os.Hostname() when empty
	Pid  int           // os.Getpid() when 0
	// Alive says whether a process of this host runs; by default, whether
	// signal 0 reaches it.
	Alive func(pid int) bool
}

func (o *LeaseOptions) defaults() {
	if o.TTL <= 0 {
		o.TTL = DefaultLeaseTTL
	}
	if o.Host == "" {
		o.Host, _ = os.Hostname()
	}
	if o.Pid == 0 {
		o.Pid = os.Getpid()
	}
	if o.Alive == nil {
		o.Alive = alive
	}
}

// alive says whether process pid of this host runs: signal 0 reaches it and
// it is not a zombie (a killed process its parent has not reaped yet).
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true // no /proc: signal 0 is all we know
	}
	// The state follows the command name, which is in parentheses.
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
		switch stat[i+2] {
		case 'Z', 'X':
			return false
		}
	}
	return true
}

// lease is a writer's hold on a backup.
type lease struct {
	store BlobStore
	keys  Keys
	cur   Lease
	// fence says the writer before this one may still run (its lease
	// expired): every partition gets a fence entry before anything else.
	fence bool

	mu     sync.Mutex
	fenced error         // set once a higher epoch is seen
	lostCh chan struct{} // closed then
	stop   chan struct{}
	done   chan struct{}
}

// acquireLease takes the backup's lease, or fails with *HeldError.
func acquireLease(ctx context.Context, store BlobStore, keys Keys, o LeaseOptions) (*lease, error) {
	o.defaults()
	objs, err := ListAll(ctx, store, keys.LeasePrefix(), "")
	if err != nil {
		return nil, fmt.Errorf("backup %q: read its lease: %w", keys.ID, err)
	}
	l := &lease{store: store, keys: keys, lostCh: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	epoch := int64(1)
	if len(objs) > 0 {
		last, err := parseNum(objs[len(objs)-1].Key)
		if err != nil {
			return nil, fmt.Errorf("backup %q: lease object %s: %w", keys.ID, objs[len(objs)-1].Key, err)
		}
		held, err := readLease(ctx, store, keys.Lease(last))
		if err != nil {
			return nil, fmt.Errorf("backup %q: %w", keys.ID, err)
		}
		if !held.Released && held.Host == o.Host && o.Alive(held.Pid) {
			// A writer whose host was just killed ends within a moment:
			// give it that moment.
			for deadline := time.Now().Add(holderGrace); o.Alive(held.Pid) && time.Now().Before(deadline); {
				time.Sleep(50 * time.Millisecond)
			}
		}
		now := time.Now()
		switch {
		case held.Released:
		case held.Host == o.Host && !o.Alive(held.Pid):
			// Its writer is dead: it can commit nothing more.
		case now.Before(held.Renewed.Add(held.TTL)):
			return nil, &HeldError{BackupID: keys.ID, Lease: held, ExpiresIn: held.Renewed.Add(held.TTL).Sub(now)}
		default:
			l.fence = true // expired: its writer may be paused, not gone
		}
		epoch = last + 1
	}
	now := time.Now().UTC()
	l.cur = Lease{Epoch: epoch, Host: o.Host, Pid: o.Pid, Since: now, Renewed: now, TTL: o.TTL}
	data, _ := json.Marshal(l.cur)
	if err := store.Put(ctx, keys.Lease(epoch), bytes.NewReader(data), int64(len(data)), PutOptions{IfAbsent: true}); err != nil {
		if errors.Is(err, ErrExists) {
			// Another writer took it at the same moment.
			if other, rerr := readLease(ctx, store, keys.Lease(epoch)); rerr == nil {
				return nil, &HeldError{BackupID: keys.ID, Lease: other, ExpiresIn: other.TTL}
			}
		}
		return nil, fmt.Errorf("backup %q: take its lease: %w", keys.ID, err)
	}
	go l.renew(o.TTL / 3)
	return l, nil
}

func readLease(ctx context.Context, store BlobStore, key string) (Lease, error) {
	var l Lease
	data, err := readObject(ctx, store, key)
	if err != nil {
		return l, fmt.Errorf("read lease: %w", err)
	}
	if err := json.Unmarshal(data, &l); err != nil {
		return l, fmt.Errorf("lease %s is corrupt: %v", key, err)
	}
	return l, nil
}

// renew says the writer is alive every interval, and watches for a writer
// that took the lease over.
func (l *lease) renew(every time.Duration) {
	defer close(l.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), every)
		if l.check(ctx) == nil {
			l.cur.Renewed = time.Now().UTC()
			data, _ := json.Marshal(l.cur)
			_ = l.store.Put(ctx, l.keys.Lease(l.cur.Epoch), bytes.NewReader(data), int64(len(data)), PutOptions{})
		}
		cancel()
	}
}

// err is the *FencedError once the writer is known to have lost the
// lease: seen by renew, or by a commit that found its seq taken.
func (l *lease) err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fenced
}

// check asks the store whether another writer holds a higher epoch, and
// returns a *FencedError if so.
func (l *lease) check(ctx context.Context) error {
	if err := l.err(); err != nil {
		return err
	}
	next := l.keys.Lease(l.cur.Epoch + 1)
	if _, err := l.store.Stat(ctx, next); errors.Is(err, ErrNotFound) {
		return nil
	} else if err != nil {
		return nil // cannot tell; the commit itself is fenced
	}
	return l.lost(ctx)
}

// lost records that the lease was taken over and returns why.
func (l *lease) lost(ctx context.Context) error {
	by, _ := readLease(ctx, l.store, l.keys.Lease(l.cur.Epoch+1))
	err := &FencedError{BackupID: l.keys.ID, Epoch: l.cur.Epoch, By: by}
	l.mu.Lock()
	if l.fenced == nil {
		l.fenced = err
		close(l.lostCh)
	}
	l.mu.Unlock()
	return err
}

// release stops renewing and, unless fenced, lets the lease go so that the
// next writer need not wait for it to expire.
func (l *lease) release(ctx context.Context, outcome string) error {
	close(l.stop)
	<-l.done
	if l.check(ctx) != nil {
		return nil
	}
	l.cur.Released, l.cur.Renewed, l.cur.Outcome = true, time.Now().UTC(), outcome
	data, _ := json.Marshal(l.cur)
	return l.store.Put(ctx, l.keys.Lease(l.cur.Epoch), bytes.NewReader(data), int64(len(data)), PutOptions{})
}

// drop stops renewing the lease and leaves it as it is, as a crash would.
func (l *lease) drop() {
	close(l.stop)
	<-l.done
}

// abandon ends the lease of a run that did not start. Unless it fenced
// the writer before (whose lease had expired: the fence entries carry this
// epoch, which no later run may take again), the run wrote nothing under
// it, and the lease is deleted: the last run of the backup is again the
// one before. A fencing lease is released as not started instead, and
// the state of the backup skips it.
func (l *lease) abandon(ctx context.Context) error {
	if l.fence {
		return l.release(ctx, OutcomeNotStarted)
	}
	close(l.stop)
	<-l.done
	if l.check(ctx) != nil {
		return nil
	}
	return l.store.Delete(ctx, l.keys.Lease(l.cur.Epoch))
}

// readObject reads a whole object.
func readObject(ctx context.Context, store BlobStore, key string) ([]byte, error) {
	r, err := store.Get(ctx, key, 0, -1)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(r); err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	return buf.Bytes(), nil
}
