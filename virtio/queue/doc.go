// Package queue implements the device side of a virtio 1.x split virtqueue
// (virtio 1.2 §2.7) over guest memory seen through virtio.Memory.
//
// The guest owns the descriptor table and the available ring and may rewrite
// them at any time, so everything read from them is untrusted: Pop returns a
// descriptor chain only after checking every index against the queue size,
// every buffer against guest RAM, the chain length (no loops), the indirect
// table rules and the order of readable and writable buffers. A malformed chain
// is reported as an error wrapping ErrInvalidChain (a *ChainError carrying the
// head, so the device can still return it to the driver); a corrupt available
// index is ErrAvailIdx. Nothing a guest writes can panic or hang the caller.
//
// Rings are never accessed through Go structs laid over guest memory: fields
// are read with ReadAt and encoding/binary, and the 16-bit indices that the
// guest and the device update concurrently (avail idx, used idx and the
// event-idx fields) are accessed with atomic operations (see ring_unsafe.go),
// which also give the memory barriers the specification asks for.
//
// A Queue is owned by one goroutine at a time (the device worker after
// activation); it is not safe for concurrent use. Its position and
// configuration are plain data (State) so that snapshots can save them and
// restore them, validated, with Restore.
//
// Typical device loop, run on the device's worker after each notification:
//
//	for {
//		c, err := q.Pop(mem) // (nil, nil): ring empty, notifications re-enabled
//		var ce *queue.ChainError
//		switch {
//		case errors.As(err, &ce): // malformed chain: count it, hand it back
//			q.Push(mem, ce.Head, 0)
//			continue
//		case errors.Is(err, queue.ErrInvalidChain): // bogus head: count it
//			continue
//		case err != nil: // corrupt ring: transport.Fail(err) and stop
//			return
//		case c == nil:
//			return
//		}
//		n := handle(c) // bytes written into c.Writable
//		q.Push(mem, c.Head, n)
//		if q.NeedsInterrupt(mem) {
//			transport.Signal(virtio.InterruptUsedBuffer)
//		}
//	}
package queue
