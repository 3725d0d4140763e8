package process

import (
	"bytes"
	"io"
	"strings"
	"sync"
	"unicode/utf8"
)

// readBufSize matches Linux's default pipe capacity: one read takes all the
// pipe holds, so a flooding child costs one syscall per 64 KiB.
const readBufSize = 64 << 10

// readBufs recycles read buffers across executions.
var readBufs = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}

// truncationNotice ends a stream's stored text when the child wrote more than
// the limit (SPEC §6).
func truncationNotice(stream string) string {
	return "\n\n[OUTPUT TRUNCATED: " + stream + " exceeded size limit]\n"
}

// capture keeps the first max bytes written to it and counts the rest. Like
// os/exec's prefixSuffixSaver it never fails a write, so the child never sees
// EPIPE and never blocks on a full pipe, and its memory is bounded by max
// whatever the child writes.
type capture struct {
	mu      sync.Mutex // Write runs on the reader goroutine, snapshot on Run's
	max     int
	buf     []byte
	dropped int64

	// The text last made of buf, and the version it was made at: the live
	// snapshot and the final result of a capped stream are one string, not
	// two copies of up to max bytes.
	last        string
	lastVersion int64
	lastOK      bool
}

func newCapture(max int) *capture { return &capture{max: max} }

func (c *capture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(p)
	if room := c.max - len(c.buf); room > 0 {
		keep := min(room, len(p))
		if len(c.buf)+keep > cap(c.buf) {
			// Grow geometrically, but never past max: a chatty child must not
			// cost more than the limit.
			grown := make([]byte, len(c.buf), min(c.max, max(2*cap(c.buf), len(c.buf)+keep, 4096)))
			copy(grown, c.buf)
			c.buf = grown
		}
		c.buf = append(c.buf, p[:keep]...)
		p = p[keep:]
	}
	c.dropped += int64(len(p))
	return n, nil
}

// readFrom copies r into c until EOF or a read error (a deadline or a close
// when a stray grandchild keeps the pipe open). Read errors are not the
// execution's failure, so they are not returned.
func (c *capture) readFrom(r io.Reader) {
	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	buf := *bp
	for {
		n, err := r.Read(buf)
		if n > 0 {
			_, _ = c.Write(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

// snapshot returns what is stored so far when it changed since version
// seen, and the version it returns. The stored text changes only while it
// grows and once more when the first dropped byte adds the truncation
// notice: bytes dropped past the cap do not change it, so they must not
// count as growth (a flood would have the whole capped text rewritten on
// every tick).
func (c *capture) snapshot(stream string, seen int64) (text string, version int64, changed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	version = c.versionLocked()
	if version == seen {
		return "", version, false
	}
	text, _ = c.textLocked(stream)
	return text, version, true
}

// versionLocked identifies the stored text: it changes exactly when the
// text does.
func (c *capture) versionLocked() int64 {
	v := int64(len(c.buf)) << 1
	if c.truncated() {
		v |= 1
	}
	return v
}

// truncated reports whether the child wrote more than max bytes.
func (c *capture) truncated() bool { return c.dropped > 0 }

// text returns what is stored for the stream: valid UTF-8, at most max bytes
// including the truncation notice, and whether it was truncated. The
// sanitised text may be longer than the raw bytes (one invalid byte becomes a
// 3-byte U+FFFD), so output under the limit can still need cutting.
func (c *capture) text(stream string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.textLocked(stream)
}

func (c *capture) textLocked(stream string) (string, bool) {
	v := c.versionLocked()
	if c.lastOK && c.lastVersion == v {
		return c.last, c.truncated()
	}
	s, truncated := c.makeText(stream)
	c.last, c.lastVersion, c.lastOK = s, v, true
	return s, truncated
}

func (c *capture) makeText(stream string) (string, bool) {
	if !c.truncated() {
		if s, complete := Sanitize(c.buf, c.max); complete {
			return s, false
		}
	}
	notice := truncationNotice(stream)
	if c.max < len(notice) {
		return "", true // a limit this small leaves room for nothing
	}
	s, _ := Sanitize(c.buf, c.max-len(notice))
	return s + notice, true
}

// Replacement stands in for each invalid byte and each NUL: PostgreSQL text
// holds neither.
const Replacement = "\uFFFD"

// Sanitize returns b as valid UTF-8 without NUL bytes, every invalid byte
// and every NUL replaced by U+FFFD (strings.ToValidUTF8 keeps NULs and folds
// runs), cut at a rune boundary to at most limit bytes; complete is false
// when it had to cut.
func Sanitize(b []byte, limit int) (s string, complete bool) {
	if len(b) <= limit && utf8.Valid(b) && bytes.IndexByte(b, 0) < 0 {
		return string(b), true
	}
	var sb strings.Builder
	sb.Grow(min(len(b), limit))
	for len(b) > 0 {
		// Copy the clean run up to the next NUL or non-ASCII byte in one go.
		i := 0
		for i < len(b) && b[i] != 0 && b[i] < utf8.RuneSelf {
			i++
		}
		if i > 0 {
			if sb.Len()+i > limit {
				sb.Write(b[:limit-sb.Len()])
				return sb.String(), false
			}
			sb.Write(b[:i])
			b = b[i:]
			continue
		}
		r, size := utf8.DecodeRune(b)
		if r == 0 || (r == utf8.RuneError && size == 1) {
			if sb.Len()+len(Replacement) > limit {
				return sb.String(), false
			}
			sb.WriteString(Replacement)
		} else {
			if sb.Len()+size > limit {
				return sb.String(), false
			}
			sb.Write(b[:size])
		}
		b = b[size:]
	}
	return sb.String(), true
}
