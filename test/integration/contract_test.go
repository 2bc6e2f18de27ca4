package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/stack/stacktest"
)

// TestConcurrentMarkRead: the read marker only moves forward, also when a
// member's mark-read calls race (through both instances, started newest
// first, so that a marker that could move back would likely end on an old
// message): each answer counts the unread after its own message at most,
// and the marker ends at the newest message, whichever call committed
// last.
func TestConcurrentMarkRead(t *testing.T) {
	svc := newService(t)
	a, b := svc.instance(), svc.instance()
	alice, bob := a.CreateUser(), a.CreateUser()
	conv := a.CreateConversation(bob, "race", alice)
	const n = 10
	for round := range 2 {
		var msgs []message
		for i := range n {
			msgs = append(msgs, a.Send(conv.ID, bob, fmt.Sprint("round ", round, " message ", i)))
		}
		var wg sync.WaitGroup
		for i := n - 1; i >= 0; i-- {
			c := []*client{a, b}[i%2]
			wg.Go(func() {
				r := c.Do("POST", "/v1/conversations/"+conv.ID+"/read", alice.Token, map[string]string{"message_id": msgs[i].ID})
				var got struct {
					UnreadCount int64 `json:"unread_count"`
				}
				if r.Status != 200 {
					t.Errorf("mark read %d: %d %s", i, r.Status, r.Body)
					return
				}
				r.Decode(t, &got)
				if got.UnreadCount > int64(n-1-i) {
					t.Errorf("round %d, mark read up to message %d: %d unread, but at most %d follow it", round, i, got.UnreadCount, n-1-i)
				}
			})
		}
		wg.Wait()
		var un unreadSummary
		a.Must(200, a.Do("GET", "/v1/unread", alice.Token, nil, "X-Consistency", "strong")).Decode(t, &un)
		var marker, last int64
		if err := svc.pool.QueryRow(context.Background(), `SELECT cm.last_read_seq, c.last_seq FROM conversation_members cm
			JOIN conversations c ON c.id = cm.conversation_id WHERE cm.conversation_id = $1::bigint AND cm.user_id = $2::bigint`,
			conv.ID, alice.ID).Scan(&marker, &last); err != nil {
			t.Fatal(err)
		}
		if un.Total != 0 || marker != last {
			t.Fatalf("round %d: after %d racing mark-reads the marker is at %d of %d (unread %+v): it moved back", round, n, marker, last, un)
		}
	}
}

// TestStoreErrorIs500 breaks the store (the messages table renamed under
// it): a read and a write that hit it get 500 internal with only the
// request id — no SQL, relation name, SQLSTATE or driver text — and the
// same id in X-Request-Id; the log has the cause under that id.
func TestStoreErrorIs500(t *testing.T) {
	svc := newService(t)
	a := svc.instance()
	alice, bob := a.CreateUser(), a.CreateUser()
	conv := a.CreateConversation(alice, "t", bob)
	a.Send(conv.ID, alice, "before")
	stacktest.Exec(t, svc.db.PrimaryURL, `ALTER TABLE messages RENAME TO messages_renamed`)
	defer stacktest.Exec(t, svc.db.PrimaryURL, `ALTER TABLE messages_renamed RENAME TO messages`)
	for _, tc := range []struct {
		what         string
		method, path string
		body         any
	}{
		{"history", "GET", "/v1/conversations/" + conv.ID + "/messages", nil},
		{"send", "POST", "/v1/conversations/" + conv.ID + "/messages", map[string]string{"body": "after"}},
	} {
		t.Run(tc.what, func(t *testing.T) {
			r := a.Do(tc.method, tc.path, alice.Token, tc.body)
			stacktest.Want(t, r, 500, chat.EINTERNAL)
			id := r.Header.Get("X-Request-Id")
			var e stacktest.ErrorBody
			r.Decode(t, &e)
			if id == "" || e.Error.Message != "internal error (request id "+id+")" {
				t.Errorf("500 body %s, X-Request-Id %q: want only the request id", r.Body, id)
			}
			body := strings.ToLower(string(r.Body))
			for _, s := range []string{"messages", "relation", "sqlstate", "42p01", "select", "insert", "postgres", svc.db.Name} {
				if strings.Contains(body, strings.ToLower(s)) {
					t.Errorf("the 500 shows %q: %s", s, r.Body)
				}
			}
			if log := a.logs.String(); !strings.Contains(log, id) || !strings.Contains(log, "42P01") {
				t.Errorf("the log has no line with request id %s and the cause (42P01):\n%s", id, log)
			}
		})
	}
}

// TestChunkedBodyOver64KiB: a body sent chunked (no Content-Length) is cut
// at 64 KiB by the server as a whole — net/http, the body limit, the
// handler — with 413, and nothing is written; a small chunked body is
// served as usual.
func TestChunkedBodyOver64KiB(t *testing.T) {
	svc := newService(t)
	a := svc.instance()
	alice, bob := a.CreateUser(), a.CreateUser()
	conv := a.CreateConversation(alice, "t", bob)
	chunked := func(body string) reply {
		// A reader of unknown length: the client sends it chunked.
		req, err := http.NewRequest("POST", a.Base+"/v1/conversations/"+conv.ID+"/messages", io.MultiReader(strings.NewReader(body)))
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength, req.TransferEncoding = -1, []string{"chunked"}
		req.Header.Set("Authorization", "Bearer "+alice.Token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := a.HTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return reply{Status: resp.StatusCode, Header: resp.Header, Body: b}
	}
	before := svc.counts()
	stacktest.Want(t, chunked(`{"body":"`+strings.Repeat("x", 70000)+`"}`), 413, chat.ETOOLARGE)
	if after := svc.counts(); after != before {
		t.Fatalf("a refused chunked body wrote: %s → %s", before, after)
	}
	stacktest.Want(t, chunked(`{"body":"small and chunked"}`), 201, "")
}

// TestDefaultLimits: without limit, a history page holds 50 messages and a
// conversation list 30 conversations (api.md), each with a cursor to the
// rest.
func TestDefaultLimits(t *testing.T) {
	svc := newService(t)
	a := svc.instance()
	alice, bob := a.CreateUser(), a.CreateUser()
	conv := a.CreateConversation(alice, "t", bob)
	var wg sync.WaitGroup
	work := make(chan func(), 100)
	for range 4 {
		wg.Go(func() {
			for f := range work {
				f()
			}
		})
	}
	for i := range 51 {
		work <- func() {
			a.Must(201, a.Do("POST", "/v1/conversations/"+conv.ID+"/messages", bob.Token, map[string]string{"body": fmt.Sprint("m", i)}))
		}
	}
	for range 30 { // with conv, 31
		work <- func() {
			a.Must(201, a.Do("POST", "/v1/conversations", alice.Token, map[string]any{"member_ids": []string{bob.ID}}))
		}
	}
	close(work)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	p := a.Page(conv.ID, alice, "")
	if len(p.Messages) != 50 || !p.HasMore || p.NextCursor == nil {
		t.Errorf("history without limit: %d messages, has_more %v, next_cursor %v; want 50, true, a cursor", len(p.Messages), p.HasMore, p.NextCursor)
	}
	var l conversationList
	a.Must(200, a.Do("GET", "/v1/conversations", alice.Token, nil)).Decode(t, &l)
	if len(l.Conversations) != 30 || l.NextCursor == nil {
		t.Errorf("list without limit: %d conversations, next_cursor %v; want 30 and a cursor", len(l.Conversations), l.NextCursor)
	}
}
