package postgres

import (
	"sync"
	"testing"

	"github.com/parley-chat/parley/internal/chat"
)

func TestIdempotentSend(t *testing.T) {
	db := migratedDB(t)
	eachMode(t, db, func(t *testing.T, s *Store) {
		ctx := testCtx(t)
		f := fixture{t, ctx, s}
		a, b := f.user(), f.user()
		conv := f.conversation(a, b)
		other := f.conversation(a, b)

		count := func(key string) int {
			var n int
			if err := s.Pool().QueryRow(ctx, `SELECT count(*) FROM messages WHERE sender_id = $1 AND idempotency_key = $2`, a.ID, key).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}

		t.Run("concurrent retries", func(t *testing.T) {
			const n = 16
			req := chat.SendRequest{ConversationID: conv.ID, SenderID: a.ID, Body: "once", IdempotencyKey: "retry-1"}
			results := make([]chat.SendResult, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					results[i], _, errs[i] = s.SendMessage(ctx, req)
				}()
			}
			close(start)
			wg.Wait()
			created := 0
			for i := range n {
				if errs[i] != nil {
					t.Fatalf("retry %d: %v", i, errs[i])
				}
				if results[i].Message.ID != results[0].Message.ID || !results[i].Message.CreatedAt.Equal(results[0].Message.CreatedAt) || results[i].Message.Body != "once" {
					t.Fatalf("retry %d got %+v, retry 0 got %+v", i, results[i].Message, results[0].Message)
				}
				if results[i].Created {
					created++
				}
			}
			if created != 1 || count("retry-1") != 1 {
				t.Fatalf("created %d times, %d rows; want 1 and 1", created, count("retry-1"))
			}
		})

		t.Run("key reused with another body", func(t *testing.T) {
			first, _, err := s.SendMessage(ctx, chat.SendRequest{ConversationID: conv.ID, SenderID: a.ID, Body: "one", IdempotencyKey: "k2"})
			if err != nil || !first.Created {
				t.Fatal(first, err)
			}
			_, _, err = s.SendMessage(ctx, chat.SendRequest{ConversationID: conv.ID, SenderID: a.ID, Body: "two", IdempotencyKey: "k2"})
			wantCode(t, err, chat.ECONFLICT)
			_, _, err = s.SendMessage(ctx, chat.SendRequest{ConversationID: other.ID, SenderID: a.ID, Body: "one", IdempotencyKey: "k2"})
			wantCode(t, err, chat.ECONFLICT)
			again, _, err := s.SendMessage(ctx, chat.SendRequest{ConversationID: conv.ID, SenderID: a.ID, Body: "one", IdempotencyKey: "k2"})
			if err != nil || again.Created || again.Message.ID != first.Message.ID {
				t.Fatalf("replay = %+v, %v", again, err)
			}
			if count("k2") != 1 {
				t.Fatalf("%d rows with key k2", count("k2"))
			}
			// Keys belong to their sender.
			theirs, _, err := s.SendMessage(ctx, chat.SendRequest{ConversationID: conv.ID, SenderID: b.ID, Body: "one", IdempotencyKey: "k2"})
			if err != nil || !theirs.Created || theirs.Message.ID == first.Message.ID {
				t.Fatalf("another sender's k2: %+v, %v", theirs, err)
			}
		})

		t.Run("racing into two conversations", func(t *testing.T) {
			const n = 12
			results := make([]chat.SendResult, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c := conv.ID
					if i%2 == 1 {
						c = other.ID
					}
					<-start
					results[i], _, errs[i] = s.SendMessage(ctx, chat.SendRequest{ConversationID: c, SenderID: a.ID, Body: "x", IdempotencyKey: "k3"})
				}()
			}
			close(start)
			wg.Wait()
			if count("k3") != 1 {
				t.Fatalf("%d rows with key k3", count("k3"))
			}
			var winner int64
			for i := range n {
				if errs[i] == nil {
					winner = results[i].Message.ConversationID
				}
			}
			for i := range n {
				target := conv.ID
				if i%2 == 1 {
					target = other.ID
				}
				if target == winner && errs[i] != nil {
					t.Fatalf("send %d into the winning conversation: %v", i, errs[i])
				}
				if target != winner && chat.ErrorCode(errs[i]) != chat.ECONFLICT {
					t.Fatalf("send %d into the other conversation: %v, want conflict", i, errs[i])
				}
			}
		})

		// b's counter equals the exact count: a's rows after b's own last message.
		c, err := s.Conversation(ctx, s.Pool(), b.ID, conv.ID)
		if err != nil {
			t.Fatal(err)
		}
		var exact int64
		if err := s.Pool().QueryRow(ctx, `
			SELECT count(*) FROM messages
			WHERE conversation_id = $1 AND sender_id <> $2
			  AND seq > (SELECT coalesce(max(seq), 0) FROM messages WHERE conversation_id = $1 AND sender_id = $2)`,
			conv.ID, b.ID).Scan(&exact); err != nil {
			t.Fatal(err)
		}
		if c.UnreadCount != exact {
			t.Fatalf("b's unread = %d, exact count %d", c.UnreadCount, exact)
		}
	})
}
