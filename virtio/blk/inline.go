package blk

// Serving a kick on the notifier's goroutine.
//
// A queue kick reaches Notify on a goroutine the monitor wakes from the
// queue's ioeventfd. Handing it to the worker goroutine costs a second
// wake-up per request, which for a guest doing one request at a time (a
// synchronous O_DIRECT read) is part of every request's latency. So when
// the worker is idle, Notify processes the ring itself: the worker and
// Notify take passMu around processing, Notify only with TryLock, so it
// never waits. When the worker is busy, Notify wakes it as before.

// activation is what Notify needs of a running worker.
type activation struct {
	w    *worker
	stop chan struct{}
}

// serveInline processes the ring on the caller's goroutine if no one else
// is. It reports whether the kick was taken care of; false means the caller
// must wake the worker.
func (d *Device) serveInline() bool {
	a := d.live.Load()
	if a == nil || !d.passMu.TryLock() {
		return false
	}
	defer d.passMu.Unlock()
	if d.live.Load() != a {
		return false
	}
	select {
	case <-a.stop:
		return false
	default:
	}
	a.w.process(a.stop)
	return true
}

// processOnWorker is process on the worker's goroutine.
func (w *worker) processOnWorker(stop <-chan struct{}) {
	w.d.passMu.Lock()
	defer w.d.passMu.Unlock()
	w.process(stop)
}

// unlive ends inline processing for the stopped worker: once it returns,
// none runs and none starts. mu held.
func (d *Device) unlive() {
	d.passMu.Lock()
	d.live.Store(nil)
	d.passMu.Unlock()
}
