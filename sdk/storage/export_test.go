package storage

// stopRenewing makes w stop renewing its lease, as a paused writer would.
func StopRenewing(w *Writer) {
	close(w.lease.stop)
	<-w.lease.done
	w.lease.stop = make(chan struct{})
	w.lease.done = make(chan struct{})
	close(w.lease.done)
}
