package agent

import "github.com/boxd-dev/boxd/agent/wire"

// chunk is one read of process output, at a position in the process's
// combined output sequence.
type chunk struct {
	off    int64
	stream wire.Stream
	b      []byte
}

// ring keeps the newest output of a background process, at most max bytes
// (whole chunks are dropped from the front). Chunks are never modified after
// they are added, so readers may hold them after releasing the lock.
type ring struct {
	max    int
	size   int
	start  int64 // offset of chunks[0]
	end    int64 // offset after the last chunk
	chunks []chunk
}

func (r *ring) add(s wire.Stream, b []byte) {
	r.chunks = append(r.chunks, chunk{off: r.end, stream: s, b: b})
	r.end += int64(len(b))
	r.size += len(b)
	for r.size > r.max && len(r.chunks) > 1 {
		r.size -= len(r.chunks[0].b)
		r.chunks[0] = chunk{}
		r.chunks = r.chunks[1:]
		r.start = r.chunks[0].off
	}
}

// since returns the chunks from offset off on (the first one trimmed to start
// at off), how many bytes before them are gone, and the offset after them.
func (r *ring) since(off int64) (out []chunk, dropped, next int64) {
	if off < r.start {
		dropped = r.start - off
		off = r.start
	}
	for _, c := range r.chunks {
		cend := c.off + int64(len(c.b))
		if cend <= off {
			continue
		}
		if c.off < off {
			c = chunk{off: off, stream: c.stream, b: c.b[off-c.off:]}
		}
		out = append(out, c)
	}
	return out, dropped, r.end
}
