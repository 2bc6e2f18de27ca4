package postgres

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/stack/stacktest"
)

func TestUsers(t *testing.T) {
	db := migratedDB(t)
	eachMode(t, db, func(t *testing.T, s *Store) {
		ctx := testCtx(t)
		handle := "alice_" + t.Name()[len(t.Name())-6:]
		u, token, _, err := s.CreateUser(ctx, handle, "Alice")
		if err != nil {
			t.Fatal(err)
		}
		if u.ID <= 0 || u.DisplayName != "Alice" || !strings.HasPrefix(token, "plt_") {
			t.Fatalf("user %+v token %q", u, token)
		}
		got, err := s.UserByToken(ctx, s.Pool(), token)
		if err != nil || got.ID != u.ID || got.Handle != handle {
			t.Fatalf("UserByToken = %+v, %v", got, err)
		}
		_, err = s.UserByToken(ctx, s.Pool(), token+"x")
		wantCode(t, err, chat.EUNAUTHENTICATED)
		_, _, _, err = s.CreateUser(ctx, handle, "Other")
		wantCode(t, err, chat.ECONFLICT)
		_, _, _, err = s.CreateUser(ctx, "Bad Handle", "")
		wantCode(t, err, chat.EINVALID)

		// The token is not stored, only its SHA-256.
		var stored []byte
		if err := s.Pool().QueryRow(ctx, `SELECT token_hash FROM users WHERE id = $1`, u.ID).Scan(&stored); err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(stored, []byte(token)) || !bytes.Equal(stored, chat.HashToken(token)) {
			t.Fatalf("stored %x", stored)
		}
	})
}

func TestConversationsAndMessages(t *testing.T) {
	db := migratedDB(t)
	eachMode(t, db, func(t *testing.T, s *Store) {
		ctx := testCtx(t)
		f := fixture{t, ctx, s}
		alice, bob, carol, mallory := f.user(), f.user(), f.user(), f.user()

		// Unknown member: EINVALID, nothing written.
		var before int
		_ = s.Pool().QueryRow(ctx, `SELECT count(*) FROM conversations`).Scan(&before)
		_, _, err := s.CreateConversation(ctx, alice.ID, "x", []int64{bob.ID, 1 << 40})
		wantCode(t, err, chat.EINVALID)
		var after int
		_ = s.Pool().QueryRow(ctx, `SELECT count(*) FROM conversations`).Scan(&after)
		if after != before {
			t.Fatalf("a failed create left %d conversations", after-before)
		}

		conv, _, err := s.CreateConversation(ctx, alice.ID, "team", []int64{bob.ID, carol.ID, bob.ID})
		if err != nil {
			t.Fatal(err)
		}
		if len(conv.MemberIDs) != 3 || conv.Title != "team" {
			t.Fatalf("conversation %+v", conv)
		}
		got, err := s.Conversation(ctx, s.Pool(), bob.ID, conv.ID)
		if err != nil || got.LastMessage != nil || got.UnreadCount != 0 || len(got.MemberIDs) != 3 || !got.CreatedAt.Equal(conv.CreatedAt) {
			t.Fatalf("Conversation = %+v, %v", got, err)
		}
		_, err = s.Conversation(ctx, s.Pool(), mallory.ID, conv.ID)
		wantCode(t, err, chat.ENOTFOUND)
		_, err = s.Conversation(ctx, s.Pool(), alice.ID, 1<<40)
		wantCode(t, err, chat.ENOTFOUND)
		members, err := s.MemberIDs(ctx, s.Pool(), conv.ID)
		if err != nil || !slices.Equal(members, conv.MemberIDs) || !slices.IsSorted(members) {
			t.Fatalf("MemberIDs = %v, %v; want %v ascending", members, err, conv.MemberIDs)
		}
		if none, err := s.MemberIDs(ctx, s.Pool(), 1<<40); err != nil || len(none) != 0 {
			t.Fatalf("MemberIDs of an unknown conversation = %v, %v", none, err)
		}

		// Sends: bob's unread grows with alice's messages, not his own.
		m1 := f.send(conv, alice, "hello")
		m2 := f.send(conv, alice, "are you there?")
		m3 := f.send(conv, carol, "yes")
		if !(m1.CreatedAt.Before(m2.CreatedAt) && m2.CreatedAt.Before(m3.CreatedAt)) || m1.ID >= m2.ID {
			t.Fatalf("order: %+v %+v %+v", m1, m2, m3)
		}
		if m1.CreatedAt.Location() != time.UTC || m1.CreatedAt.Nanosecond()%1000 != 0 {
			t.Fatalf("created_at %v is not UTC microseconds", m1.CreatedAt)
		}
		res, _, err := s.SendMessage(ctx, chat.SendRequest{ConversationID: conv.ID, SenderID: bob.ID, Body: "hi all"})
		if err != nil || !res.Created || len(res.MemberIDs) != 3 {
			t.Fatalf("send = %+v, %v", res, err)
		}
		got, _ = s.Conversation(ctx, s.Pool(), alice.ID, conv.ID)
		if got.LastMessage == nil || got.LastMessage.ID != res.Message.ID || got.LastMessage.Body != "hi all" || got.UnreadCount != 2 {
			t.Fatalf("alice sees %+v (last %+v)", got, got.LastMessage)
		}
		got, _ = s.Conversation(ctx, s.Pool(), bob.ID, conv.ID)
		if got.UnreadCount != 0 {
			t.Fatalf("bob's unread after his own send = %d, want 0", got.UnreadCount)
		}
		_, _, err = s.SendMessage(ctx, chat.SendRequest{ConversationID: conv.ID, SenderID: mallory.ID, Body: "let me in"})
		wantCode(t, err, chat.ENOTFOUND)
		_, _, err = s.SendMessage(ctx, chat.SendRequest{ConversationID: conv.ID, SenderID: alice.ID, Body: "  "})
		wantCode(t, err, chat.EINVALID)

		// Read markers move forward only; a foreign message is EINVALID.
		n, _, err := s.MarkRead(ctx, carol.ID, conv.ID, m1.ID)
		if err != nil || n != 1 { // m3 is carol's own and advanced her marker already
			t.Fatalf("MarkRead(m1) = %d, %v; want 1", n, err)
		}
		n, _, err = s.MarkRead(ctx, alice.ID, conv.ID, res.Message.ID)
		if err != nil || n != 0 {
			t.Fatalf("MarkRead(last) = %d, %v", n, err)
		}
		n, _, err = s.MarkRead(ctx, alice.ID, conv.ID, m1.ID)
		if err != nil || n != 0 {
			t.Fatalf("MarkRead backwards = %d, %v; want 0 (marker stays)", n, err)
		}
		other := f.conversation(mallory, alice)
		foreign := f.send(other, mallory, "elsewhere")
		_, _, err = s.MarkRead(ctx, alice.ID, conv.ID, foreign.ID)
		wantCode(t, err, chat.EINVALID)
		_, _, err = s.MarkRead(ctx, mallory.ID, conv.ID, m1.ID)
		wantCode(t, err, chat.ENOTFOUND)

		un, err := s.Unread(ctx, s.Pool(), alice.ID)
		if err != nil || len(un) != 1 || un[0].ConversationID != other.ID || un[0].Count != 1 {
			t.Fatalf("alice's unread = %+v, %v", un, err)
		}
		un, _ = s.Unread(ctx, s.Pool(), bob.ID)
		if len(un) != 0 {
			t.Fatalf("bob's unread = %+v, want none", un)
		}
	})
}

func TestConversationList(t *testing.T) {
	db := migratedDB(t)
	eachMode(t, db, func(t *testing.T, s *Store) {
		ctx := testCtx(t)
		f := fixture{t, ctx, s}
		me, peer := f.user(), f.user()
		var convs []chat.Conversation
		for range 7 {
			convs = append(convs, f.conversation(me, peer))
		}
		// Activity: conversation 2 then 5 get messages; the rest order by creation.
		f.send(convs[2], peer, "a")
		f.send(convs[5], peer, "b")
		want := []int64{convs[5].ID, convs[2].ID, convs[6].ID, convs[4].ID, convs[3].ID, convs[1].ID, convs[0].ID}
		var got []int64
		page := chat.PageRequest{Direction: chat.Newest, Limit: 3}
		for pages := 0; ; pages++ {
			p, err := s.Conversations(ctx, s.Pool(), me.ID, page)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range p.Conversations {
				got = append(got, c.ID)
				if c.ID == convs[5].ID && (c.LastMessage == nil || c.LastMessage.Body != "b" || c.UnreadCount != 1 || len(c.MemberIDs) != 2) {
					t.Fatalf("enrichment: %+v", c)
				}
			}
			if !p.HasMore {
				break
			}
			page = chat.PageRequest{Direction: chat.Before, Cursor: p.Conversations[len(p.Conversations)-1].ListCursor(), Limit: 3}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("list order %v, want %v", got, want)
		}
	})
}

func TestCursorKey(t *testing.T) {
	// Each database migrated from empty makes its own key (a copy of a
	// template database would share the template's).
	db := emptyMigratedDB(t)
	ctx := testCtx(t)
	pool := connect(t, db.PgBouncerURL, pgx.QueryExecModeExec, 2)
	k1, err := CursorKey(ctx, pool, "")
	if err != nil || len(k1) != 32 {
		t.Fatalf("CursorKey = %x, %v", k1, err)
	}
	k2, _ := CursorKey(ctx, pool, "")
	if !bytes.Equal(k1, k2) {
		t.Fatal("the stored key changed between reads")
	}
	if k, err := CursorKey(ctx, pool, "000102030405060708090a0b0c0d0e0f"); err != nil || len(k) != 16 {
		t.Fatalf("hex override: %x, %v", k, err)
	}
	if _, err := CursorKey(ctx, pool, "short"); err == nil {
		t.Fatal("a 5-character override was accepted")
	}
	// Another database has another key.
	other := emptyMigratedDB(t)
	k3, err := CursorKey(ctx, connect(t, other.PrimaryURL, pgx.QueryExecModeExec, 1), "")
	if err != nil || bytes.Equal(k1, k3) {
		t.Fatalf("second database key %x (%v) equals the first", k3, err)
	}
}

// TestUnavailable: a write on a primary that refuses connections fails with
// ErrUnavailable. (With the pool's wait bound exceeded, see dbrouter's
// TestStoreOnExhaustedPool: the bound is the router's pools'.)
func TestUnavailable(t *testing.T) {
	ctx := testCtx(t)
	// Nothing listens on port 1: connection refused.
	s := New(connect(t, "postgres://parley:x@127.0.0.1:1/parley?sslmode=disable&connect_timeout=2", pgx.QueryExecModeExec, 2))
	_, _, _, err := s.CreateUser(ctx, "nobody", "")
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("CreateUser on a refused connection: %v, want ErrUnavailable", err)
	}
	_, _, err = s.SendMessage(ctx, chat.SendRequest{ConversationID: 1, SenderID: 1, Body: "hi"})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("SendMessage on a refused connection: %v, want ErrUnavailable", err)
	}
}

func TestImportHistory(t *testing.T) {
	db := migratedDB(t)
	ctx := testCtx(t)
	s := New(connect(t, db.PgBouncerURL, pgx.QueryExecModeExec, 4))
	f := fixture{t, ctx, s}
	a, b := f.user(), f.user()
	conv := f.conversation(a, b)
	t0 := time.Now().Add(-time.Hour).Truncate(time.Microsecond)
	var msgs []chat.Message
	for i := range 30 {
		msgs = append(msgs, chat.Message{SenderID: []int64{a.ID, b.ID}[i%2], Body: fmt.Sprint("old ", i), CreatedAt: t0.Add(time.Duration(i) * time.Second)})
	}
	n, err := s.ImportHistory(ctx, []HistoryImport{{ConversationID: conv.ID, Messages: msgs, ReadUpTo: map[int64]int64{b.ID: 25}}})
	if err != nil || n != 30 {
		t.Fatalf("import: %d, %v", n, err)
	}
	got, err := s.Conversation(ctx, s.Pool(), b.ID, conv.ID)
	if err != nil || got.UnreadCount != 5 || got.LastMessage == nil || got.LastMessage.Body != "old 29" || !got.CreatedAt.Equal(t0) {
		t.Fatalf("after import: %+v, %v", got, err)
	}
	// A live send continues the sequence after the history.
	live := f.send(conv, a, "live")
	got, _ = s.Conversation(ctx, s.Pool(), b.ID, conv.ID)
	if got.UnreadCount != 6 || !live.CreatedAt.After(msgs[29].CreatedAt) {
		t.Fatalf("after a live send: unread %d", got.UnreadCount)
	}
	// A conversation with messages, or times out of order: EINVALID, nothing written.
	_, err = s.ImportHistory(ctx, []HistoryImport{{ConversationID: conv.ID, Messages: msgs[:1]}})
	wantCode(t, err, chat.EINVALID)
	other := f.conversation(a)
	_, err = s.ImportHistory(ctx, []HistoryImport{{ConversationID: other.ID, Messages: []chat.Message{msgs[1], msgs[0]}}})
	wantCode(t, err, chat.EINVALID)
	var count int
	_ = s.Pool().QueryRow(ctx, `SELECT count(*) FROM messages`).Scan(&count)
	if count != 31 {
		t.Fatalf("%d messages stored, want 31", count)
	}
}

// TestMigrateConcurrentFirstRuns: several instances starting at once on an
// empty database apply every migration exactly once (the tracking table is
// created under the same lock as the migrations).
func TestMigrateConcurrentFirstRuns(t *testing.T) {
	db := stacktest.ForTest(t).NewEmptyDatabase(t)
	ctx := testCtx(t)
	const runs = 8
	var wg sync.WaitGroup
	errs := make([]error, runs)
	start := make(chan struct{})
	for i := range runs {
		pool := connect(t, db.PrimaryURL, pgx.QueryExecModeExec, 2)
		if err := pool.Ping(ctx); err != nil { // connected before the start
			t.Fatal(err)
		}
		wg.Go(func() {
			<-start
			_, errs[i] = Migrate(ctx, pool, nil)
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("run %d: %v", i, err)
		}
	}
	ms, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	var rows, distinct int
	pool := connect(t, db.PrimaryURL, pgx.QueryExecModeExec, 1)
	if err := pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT version) FROM schema_migrations`).Scan(&rows, &distinct); err != nil {
		t.Fatal(err)
	}
	if rows != len(ms) || distinct != len(ms) {
		t.Errorf("schema_migrations has %d rows (%d versions), want %d", rows, distinct, len(ms))
	}
}

// TestMessagesAndMembers: the history page with the member list, in one
// statement, is Messages' page and MemberIDs' list, in every direction, for
// an empty conversation too; a non-member is ENOTFOUND.
func TestMessagesAndMembers(t *testing.T) {
	db := migratedDB(t)
	eachMode(t, db, func(t *testing.T, s *Store) {
		ctx := testCtx(t)
		f := fixture{t, ctx, s}
		alice, bob, carol, mallory := f.user(), f.user(), f.user(), f.user()
		conv := f.conversation(alice, bob, carol)
		check := func(what string, page chat.PageRequest) {
			t.Helper()
			want, err := s.Messages(ctx, s.Pool(), bob.ID, conv.ID, page)
			if err != nil {
				t.Fatal(err)
			}
			got, members, err := s.MessagesAndMembers(ctx, s.Pool(), bob.ID, conv.ID, page)
			wantMembers, _ := s.MemberIDs(ctx, s.Pool(), conv.ID)
			if err != nil || !slices.Equal(members, wantMembers) || len(members) != 3 || got.HasMore != want.HasMore || !slices.EqualFunc(got.Messages, want.Messages, func(a, b chat.Message) bool {
				return a.ID == b.ID && a.Body == b.Body && a.CreatedAt.Equal(b.CreatedAt) && a.SenderID == b.SenderID
			}) {
				t.Fatalf("%s: MessagesAndMembers = %+v, %v, %v; want %+v, %v", what, got, members, err, want, wantMembers)
			}
		}
		check("empty", chat.PageRequest{Direction: chat.Newest, Limit: 5})
		var sent []chat.Message
		for i := range 7 {
			sent = append(sent, f.send(conv, []chat.User{alice, carol}[i%2], "m"))
		}
		check("newest", chat.PageRequest{Direction: chat.Newest, Limit: 5})
		check("newest, all", chat.PageRequest{Direction: chat.Newest, Limit: 50})
		mid := chat.Cursor{Time: sent[3].CreatedAt, ID: sent[3].ID}
		check("before", chat.PageRequest{Direction: chat.Before, Cursor: mid, Limit: 2})
		check("after", chat.PageRequest{Direction: chat.After, Cursor: mid, Limit: 2})
		check("after the last", chat.PageRequest{Direction: chat.After, Cursor: chat.Cursor{Time: sent[6].CreatedAt, ID: sent[6].ID}, Limit: 2})
		_, _, err := s.MessagesAndMembers(ctx, s.Pool(), mallory.ID, conv.ID, chat.PageRequest{Direction: chat.Newest, Limit: 5})
		wantCode(t, err, chat.ENOTFOUND)
	})
}
