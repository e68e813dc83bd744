package net

// Serving a kick on the notifier's goroutine.
//
// A queue kick reaches Notify on a goroutine the monitor wakes from the
// queue's ioeventfd. Passing it on to the worker costs an eventfd write and
// a second thread wake-up (the worker sleeps in epoll_wait on its own OS
// thread) per kick; on a nested or emulated host each wake-up is tens of
// microseconds, and a guest sending TCP kicks for every few frames. So when
// the worker is idle, Notify runs the pass itself: the worker and Notify
// take passMu around a pass, Notify only with TryLock, so it never waits.
// When the worker is busy, Notify kicks it as before and the worker's next
// pass picks the new chains up.

// serveInline runs one pass on the caller's goroutine if no other pass is
// running. It reports whether the kick was taken care of; false means the
// caller must kick the worker.
func (d *Device) serveInline() bool {
	w := d.live.Load()
	if w == nil || !d.passMu.TryLock() {
		return false
	}
	defer d.passMu.Unlock()
	if d.live.Load() != w || w.stop.Load() {
		return false
	}
	more := w.pass()
	d.setInterest(w.interest())
	if more {
		// The budget ran out: the worker continues, and interleaves the
		// backend's events with the rest.
		d.kick()
	}
	return true
}

// passOnWorker runs one pass on the worker's goroutine. It reports whether
// work is left over.
func (w *worker) passOnWorker() bool {
	w.d.passMu.Lock()
	defer w.d.passMu.Unlock()
	more := w.pass()
	w.d.setInterest(w.interest())
	return more
}

// unlive ends inline passes for the halted worker: once it returns, none
// runs and none starts. mu held.
func (d *Device) unlive() {
	d.passMu.Lock()
	d.live.Store(nil)
	d.passMu.Unlock()
}
