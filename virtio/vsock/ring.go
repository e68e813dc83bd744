package vsock

// ring is a fixed-size byte FIFO. One goroutine produces (writable, commit)
// and one consumes (readable, discard); both hold the connection's lock to
// move the indices, but may fill or drain the slices they were handed after
// releasing it: a producer's free segment and a consumer's data segment never
// overlap, and the indices never move backwards over a segment handed out.
type ring struct {
	buf  []byte
	r, n int // start and length of the data
}

func newRing(size int) ring { return ring{buf: make([]byte, size)} }

// Len returns the number of buffered bytes.
func (b *ring) Len() int { return b.n }

// Free returns the free space.
func (b *ring) Free() int { return len(b.buf) - b.n }

// readable returns the first contiguous run of buffered bytes.
func (b *ring) readable() []byte {
	end := min(b.r+b.n, len(b.buf))
	return b.buf[b.r:end]
}

// segments returns the first k buffered bytes (k <= Len) as up to two slices.
func (b *ring) segments(k int) (first, second []byte) {
	first = b.readable()
	if k <= len(first) {
		return first[:k], nil
	}
	return first, b.buf[:k-len(first)]
}

// writable returns the first contiguous run of free space.
func (b *ring) writable() []byte {
	if b.n == len(b.buf) {
		return nil
	}
	w := (b.r + b.n) % len(b.buf)
	if w >= b.r {
		return b.buf[w:]
	}
	return b.buf[w:b.r]
}

// commit appends the k bytes just written into writable().
func (b *ring) commit(k int) { b.n += k }

// discard drops the first k buffered bytes.
func (b *ring) discard(k int) {
	if k == 0 {
		return
	}
	b.r = (b.r + k) % len(b.buf)
	b.n -= k
}

// write appends p, which must fit.
func (b *ring) write(p []byte) {
	for len(p) > 0 {
		k := copy(b.writable(), p)
		b.commit(k)
		p = p[k:]
	}
}
