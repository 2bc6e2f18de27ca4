package loadgen

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// rawServer is an HTTP/1.1 server over a bare net.Listener that reads
// pipelined requests as they arrive and answers them in order after a delay,
// so a test can see how many requests a client keeps outstanding.
type rawServer struct {
	ln             net.Listener
	delay          time.Duration
	closeEvery     int  // answer every Nth response of a connection with Connection: close, then close
	chunked        bool // chunked bodies instead of Content-Length
	requests       atomic.Int64
	responses      atomic.Int64
	conns          atomic.Int64
	maxOutstanding atomic.Int64
	wg             sync.WaitGroup
}

func newRawServer(t *testing.T, delay time.Duration) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{ln: ln, delay: delay}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.serve(c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

func (s *rawServer) url() string { return "http://" + s.ln.Addr().String() + "/x" }

func (s *rawServer) serve(c net.Conn) {
	defer c.Close()
	queue := make(chan struct{}, 4096)
	var outstanding atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		bw := bufio.NewWriter(c)
		n := 0
		for range queue {
			time.Sleep(s.delay)
			n++
			closing := s.closeEvery > 0 && n%s.closeEvery == 0
			hdr := ""
			if closing {
				hdr = "Connection: close\r\n"
			}
			if s.chunked {
				fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\n%sTransfer-Encoding: chunked\r\n\r\n4\r\nresp\r\n3\r\nons\r\n0\r\n\r\n", hdr)
			} else {
				fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\n%sContent-Length: 2\r\n\r\nok", hdr)
			}
			outstanding.Add(-1)
			s.responses.Add(1)
			if len(queue) == 0 || closing {
				if bw.Flush() != nil {
					return
				}
			}
			if closing {
				c.Close()
				return
			}
		}
	}()
	br := bufio.NewReader(c)
	for {
		if err := readRequestHead(br); err != nil {
			break
		}
		s.requests.Add(1)
		n := outstanding.Add(1)
		for {
			m := s.maxOutstanding.Load()
			if n <= m || s.maxOutstanding.CompareAndSwap(m, n) {
				break
			}
		}
		queue <- struct{}{}
	}
	close(queue)
	<-done
}

// readRequestHead reads one request (head and Content-Length body).
func readRequestHead(br *bufio.Reader) error {
	length := 0
	first := true
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			if first {
				continue
			}
			break
		}
		first = false
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "content-length") {
			length, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	_, err := br.Discard(length)
	return err
}

// stallServer answers after delay, except that from stallAfter after the
// first request and for stall it answers nothing (the answers come out
// when the stall ends).
type stallServer struct {
	*httptest.Server
	requests atomic.Int64
	first    atomic.Int64 // unix nanos of the first request
}

func newStallServer(t *testing.T, delay, stallAfter, stall time.Duration) *stallServer {
	t.Helper()
	s := &stallServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		s.requests.Add(1)
		s.first.CompareAndSwap(0, now.UnixNano())
		start := time.Unix(0, s.first.Load()).Add(stallAfter)
		if end := start.Add(stall); stall > 0 && !now.Before(start) && now.Before(end) {
			time.Sleep(time.Until(end))
		}
		if delay > 0 {
			time.Sleep(delay)
		}
		w.Header().Set("Content-Length", "2")
		w.Write([]byte("ok"))
	}))
	t.Cleanup(s.Close)
	return s
}
