package dbrouter

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// TestCleanupDial: a connection that writes a cancel request or a Terminate
// gets a deadline (a server that never answers cannot hold it), any other
// write leaves it without one.
func TestCleanupDial(t *testing.T) {
	// A server that accepts and never reads, writes or closes: a stopped
	// PgBouncer as its clients see it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	cancelReq := make([]byte, 16)
	binary.BigEndian.PutUint32(cancelReq[0:4], 16)
	binary.BigEndian.PutUint32(cancelReq[4:8], cancelRequestCode)
	binary.BigEndian.PutUint32(cancelReq[8:12], 4242)
	query := append([]byte{'Q', 0, 0, 0, 13}, "SELECT 1\x00"...)
	const bound = 200 * time.Millisecond
	for _, tc := range []struct {
		name     string
		write    []byte
		deadline bool
	}{
		{"cancel request", cancelReq, true},
		{"terminate", terminateMsg, true},
		{"a query ending with something else", query, false},
		{"a cancel request's code in a message of another length", append(cancelReq, 0), false},
		{"a write ending with Terminate's bytes", append([]byte{'d', 0, 0, 0, 9, 1, 2, 3, 4}, terminateMsg...), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := cleanupDial(nil, bound)(context.Background(), "tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write(tc.write); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				_, err := c.Read(make([]byte, 1))
				done <- err
			}()
			// Without a deadline the read would wait for ever: the test
			// closes the connection after 10 bounds. (A slow machine can only
			// make the read with a deadline return later, never one without
			// a deadline return earlier.)
			select {
			case err := <-done:
				if !tc.deadline {
					t.Fatalf("the read returned (%v): the connection got a deadline", err)
				}
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("the read returned %v, want its deadline", err)
				}
			case <-time.After(10 * bound):
				if tc.deadline {
					t.Fatalf("no deadline %v after the write", bound)
				}
			}
		})
	}
}
