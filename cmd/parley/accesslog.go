package main

import (
	"io"
	"sync"
	"time"
)

// lineBuffer is the access log's writer: it gathers whole lines (each Write
// is one log line) and writes them to w in one write when the buffer would
// overflow, every interval, and on Close — not one write per request.
// Lines are never split, so they interleave whole with the process's other
// log lines (which may precede a buffered access line by up to interval).
type lineBuffer struct {
	mu   sync.Mutex
	w    io.Writer
	buf  []byte
	stop chan struct{}
	done chan struct{}
}

const (
	accessLogBuffer = 64 << 10
	accessLogFlush  = 100 * time.Millisecond
)

func newLineBuffer(w io.Writer) *lineBuffer {
	b := &lineBuffer{w: w, buf: make([]byte, 0, accessLogBuffer), stop: make(chan struct{}), done: make(chan struct{})}
	go b.loop()
	return b
}

func (b *lineBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.buf)+len(p) > cap(b.buf) {
		b.flushLocked()
		if len(p) > cap(b.buf) {
			return b.w.Write(p)
		}
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

func (b *lineBuffer) flushLocked() {
	if len(b.buf) > 0 {
		_, _ = b.w.Write(b.buf)
		b.buf = b.buf[:0]
	}
}

func (b *lineBuffer) loop() {
	defer close(b.done)
	t := time.NewTicker(accessLogFlush)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			b.mu.Lock()
			b.flushLocked()
			b.mu.Unlock()
		}
	}
}

// Close writes what is buffered and stops the flusher.
func (b *lineBuffer) Close() {
	close(b.stop)
	<-b.done
	b.mu.Lock()
	b.flushLocked()
	b.mu.Unlock()
}
