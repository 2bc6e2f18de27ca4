package postgres

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/parley-chat/parley/internal/chat"
)

// pageAll pages through history from the first request until has_more is
// false and returns every message in the order received.
func pageAll(t *testing.T, ctx context.Context, s *Store, user, conv int64, first chat.PageRequest) []chat.Message {
	t.Helper()
	var all []chat.Message
	page := first
	for i := 0; ; i++ {
		p, err := s.Messages(ctx, s.Pool(), user, conv, page)
		if err != nil {
			t.Fatalf("page %d: %v", i, err)
		}
		if len(p.Messages) > page.Limit {
			t.Fatalf("page %d has %d messages, limit %d", i, len(p.Messages), page.Limit)
		}
		all = append(all, p.Messages...)
		if !p.HasMore {
			return all
		}
		if len(p.Messages) == 0 {
			t.Fatalf("page %d: has_more with no messages", i)
		}
		dir := chat.Before
		if page.Direction == chat.After {
			dir = chat.After
		}
		page = chat.PageRequest{Direction: dir, Cursor: p.Messages[len(p.Messages)-1].Cursor(), Limit: page.Limit}
	}
}

// checkOrder fails unless ms is strictly ordered (ascending or descending by
// (created_at, id)) with no message twice.
func checkOrder(t *testing.T, ms []chat.Message, ascending bool) {
	t.Helper()
	seen := map[int64]bool{}
	for i, m := range ms {
		if seen[m.ID] {
			t.Fatalf("message %d appears twice", m.ID)
		}
		seen[m.ID] = true
		if i == 0 {
			continue
		}
		p := ms[i-1]
		c := p.CreatedAt.Compare(m.CreatedAt)
		if c == 0 {
			c = cmpInt(p.ID, m.ID)
		}
		if ascending && c >= 0 || !ascending && c <= 0 {
			t.Fatalf("out of order at %d: %d@%v then %d@%v", i, p.ID, p.CreatedAt, m.ID, m.CreatedAt)
		}
	}
}

func ids(ms []chat.Message) string {
	out := make([]int64, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return fmt.Sprint(out)
}

func TestPaginationBothWays(t *testing.T) {
	db := migratedDB(t)
	eachMode(t, db, func(t *testing.T, s *Store) {
		ctx := testCtx(t)
		f := fixture{t, ctx, s}
		a, b := f.user(), f.user()
		conv := f.conversation(a, b)
		var sent []chat.Message // oldest first
		for i := range 123 {
			from := a
			if i%3 == 0 {
				from = b
			}
			sent = append(sent, f.send(conv, from, fmt.Sprintf("m%d", i)))
		}
		newestFirst := make([]chat.Message, len(sent))
		for i, m := range sent {
			newestFirst[len(sent)-1-i] = m
		}

		back := pageAll(t, ctx, s, a.ID, conv.ID, chat.PageRequest{Direction: chat.Newest, Limit: 10})
		checkOrder(t, back, false)
		if ids(back) != ids(newestFirst) {
			t.Fatalf("backward paging gave %d messages, not the %d sent, newest first", len(back), len(sent))
		}
		fwd := pageAll(t, ctx, s, a.ID, conv.ID, chat.PageRequest{Direction: chat.After, Cursor: sent[0].Cursor(), Limit: 10})
		checkOrder(t, fwd, true)
		if ids(fwd) != ids(sent[1:]) {
			t.Fatalf("forward paging gave %d messages, want the %d after the first, oldest first", len(fwd), len(sent)-1)
		}
		for _, m := range fwd {
			if m.ConversationID != conv.ID || m.Body == "" || m.SenderID == 0 {
				t.Fatalf("incomplete message %+v", m)
			}
		}
		// Exact page boundaries: a page that ends at the oldest message says so.
		p, _ := s.Messages(ctx, s.Pool(), a.ID, conv.ID, chat.PageRequest{Direction: chat.Before, Cursor: sent[10].Cursor(), Limit: 10})
		if len(p.Messages) != 10 || p.HasMore || p.Messages[9].ID != sent[0].ID {
			t.Fatalf("page before #10: %d messages, has_more %v", len(p.Messages), p.HasMore)
		}
		p, _ = s.Messages(ctx, s.Pool(), a.ID, conv.ID, chat.PageRequest{Direction: chat.After, Cursor: sent[len(sent)-1].Cursor(), Limit: 10})
		if len(p.Messages) != 0 || p.HasMore {
			t.Fatalf("page after the newest: %+v", p)
		}
		// An empty conversation is an empty page, not "not found".
		empty := f.conversation(a)
		p, err := s.Messages(ctx, s.Pool(), a.ID, empty.ID, chat.PageRequest{Direction: chat.Newest, Limit: 50})
		if err != nil || len(p.Messages) != 0 || p.HasMore {
			t.Fatalf("empty conversation: %+v, %v", p, err)
		}
		_, err = s.Messages(ctx, s.Pool(), b.ID, empty.ID, chat.PageRequest{Direction: chat.Newest, Limit: 50})
		wantCode(t, err, chat.ENOTFOUND)
		_, err = s.Messages(ctx, s.Pool(), a.ID, conv.ID, chat.PageRequest{Direction: chat.Newest, Limit: 101})
		wantCode(t, err, chat.EINVALID)
	})
}

// sendConcurrently runs senders goroutines, each sending n messages into
// conv, and returns a channel closed when they are done.
func sendConcurrently(t *testing.T, ctx context.Context, s *Store, conv chat.Conversation, users []chat.User, n int) <-chan struct{} {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for _, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				if _, _, err := s.SendMessage(ctx, chat.SendRequest{ConversationID: conv.ID, SenderID: u.ID, Body: fmt.Sprintf("%d:%d", u.ID, i)}); err != nil {
					t.Errorf("concurrent send: %v", err)
					return
				}
			}
		}()
	}
	go func() { wg.Wait(); close(done) }()
	return done
}

func allMessages(t *testing.T, ctx context.Context, s *Store, conv int64) []chat.Message {
	t.Helper()
	rows, err := s.Pool().Query(ctx, `SELECT id, created_at FROM messages WHERE conversation_id = $1 ORDER BY created_at, id`, conv)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []chat.Message
	for rows.Next() {
		var m chat.Message
		if err := rows.Scan(&m.ID, &m.CreatedAt); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// TestPagingWhileSending: paging back through history while three users
// send never skips or repeats; catching up with after while they send ends
// with exactly every message, in commit order.
func TestPagingWhileSending(t *testing.T) {
	db := migratedDB(t)
	eachMode(t, db, func(t *testing.T, s *Store) {
		ctx := testCtx(t)
		f := fixture{t, ctx, s}
		users := []chat.User{f.user(), f.user(), f.user()}
		conv := f.conversation(users[0], users[1:]...)
		for i := range 60 {
			f.send(conv, users[i%3], fmt.Sprintf("old %d", i))
		}
		start := f.send(conv, users[0], "start")

		done := sendConcurrently(t, ctx, s, conv, users, 40)

		// Backward from the newest page, while the others send.
		back := pageAll(t, ctx, s, users[1].ID, conv.ID, chat.PageRequest{Direction: chat.Newest, Limit: 7})
		checkOrder(t, back, false)

		// Forward catch-up from "start" until the senders are done and a
		// page comes back short.
		var fwd []chat.Message
		cur := start.Cursor()
		finished := false
		for {
			select {
			case <-done:
				finished = true
			default:
			}
			p, err := s.Messages(ctx, s.Pool(), users[2].ID, conv.ID, chat.PageRequest{Direction: chat.After, Cursor: cur, Limit: 7})
			if err != nil {
				t.Fatal(err)
			}
			fwd = append(fwd, p.Messages...)
			if len(p.Messages) > 0 {
				cur = p.Messages[len(p.Messages)-1].Cursor()
			}
			if finished && !p.HasMore {
				break
			}
		}
		checkOrder(t, fwd, true)

		all := allMessages(t, ctx, s, conv.ID)
		if len(all) != 61+3*40 {
			t.Fatalf("%d messages stored, want %d", len(all), 61+3*40)
		}
		// Forward: exactly every message after start.
		var wantFwd []chat.Message
		for i, m := range all {
			if m.ID == start.ID {
				wantFwd = all[i+1:]
			}
		}
		if ids(fwd) != ids(wantFwd) {
			t.Fatalf("catch-up got %d messages, want %d", len(fwd), len(wantFwd))
		}
		// Backward: every message up to the first page's newest, once.
		var wantBack []chat.Message
		for i := len(all) - 1; i >= 0; i-- {
			if all[i].Cursor().Time.After(back[0].CreatedAt) || all[i].CreatedAt.Equal(back[0].CreatedAt) && all[i].ID > back[0].ID {
				continue
			}
			wantBack = append(wantBack, all[i])
		}
		if ids(back) != ids(wantBack) {
			t.Fatalf("backward paging while sending got %d messages, want %d", len(back), len(wantBack))
		}
		// The per-conversation seq is 1..n in commit order.
		var bad int
		if err := s.Pool().QueryRow(ctx, `
			SELECT count(*) FROM (
				SELECT seq, row_number() OVER (ORDER BY created_at, id) AS rn FROM messages WHERE conversation_id = $1) x
			WHERE seq <> rn`, conv.ID).Scan(&bad); err != nil || bad != 0 {
			t.Fatalf("%d messages have a seq out of commit order (%v)", bad, err)
		}
	})
}
