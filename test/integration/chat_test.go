package integration

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
)

// TestConversationLifecycle: users, a group, messages, the list, unread
// counts and read markers, as three clients see them.
func TestConversationLifecycle(t *testing.T) {
	svc := newService(t)
	api := svc.instance()
	alice, bob, carol := api.CreateUser(), api.CreateUser(), api.CreateUser()

	var me user
	api.Must(200, api.Do("GET", "/v1/me", bob.Token, nil)).Decode(t, &me)
	if me.ID != bob.ID || me.Token != "" {
		t.Fatalf("me = %+v", me)
	}

	group := api.CreateConversation(alice, "trip", bob, carol)
	dm := api.CreateConversation(bob, "", alice)
	if len(group.MemberIDs) != 3 || !slices.Contains(group.MemberIDs, alice.ID) {
		t.Fatalf("group members %v", group.MemberIDs)
	}
	api.Send(group.ID, alice, "who's in?")
	api.Send(group.ID, bob, "me")
	last := api.Send(dm.ID, alice, "psst")

	// Carol: two unread in the group (alice's and bob's), the dm is not hers.
	var un struct {
		Total         int64 `json:"total"`
		Conversations []struct {
			ID          string `json:"id"`
			UnreadCount int64  `json:"unread_count"`
		} `json:"conversations"`
	}
	api.Must(200, api.Do("GET", "/v1/unread", carol.Token, nil)).Decode(t, &un)
	if un.Total != 2 || len(un.Conversations) != 1 || un.Conversations[0].ID != group.ID {
		t.Fatalf("carol's unread %+v", un)
	}
	// Bob: the dm (1) and alice's group message before his own reply (0).
	un.Conversations = nil
	api.Must(200, api.Do("GET", "/v1/unread", bob.Token, nil)).Decode(t, &un)
	if un.Total != 1 || un.Conversations[0].ID != dm.ID {
		t.Fatalf("bob's unread %+v", un)
	}

	// Alice's list: the dm (newest activity) first, with its last message.
	var list struct {
		Conversations []conversation `json:"conversations"`
		NextCursor    *string        `json:"next_cursor"`
	}
	api.Must(200, api.Do("GET", "/v1/conversations", alice.Token, nil)).Decode(t, &list)
	if len(list.Conversations) != 2 || list.Conversations[0].ID != dm.ID || list.Conversations[0].LastMessage == nil ||
		list.Conversations[0].LastMessage.ID != last.ID || list.Conversations[0].LastMessageAt == nil ||
		*list.Conversations[0].LastMessageAt != last.CreatedAt || list.NextCursor != nil {
		t.Fatalf("alice's list %+v", list)
	}
	if list.Conversations[1].UnreadCount != 1 { // bob's "me"
		t.Fatalf("alice's group unread %d, want 1", list.Conversations[1].UnreadCount)
	}

	// Carol reads up to the newest group message.
	p := api.Page(group.ID, carol, "?limit=1")
	var read struct {
		UnreadCount int64 `json:"unread_count"`
	}
	api.Must(200, api.Do("POST", "/v1/conversations/"+group.ID+"/read", carol.Token, map[string]string{"message_id": p.Messages[0].ID})).Decode(t, &read)
	if read.UnreadCount != 0 {
		t.Fatalf("after reading the newest: %d unread", read.UnreadCount)
	}
	var conv conversation
	api.Must(200, api.Do("GET", "/v1/conversations/"+group.ID, carol.Token, nil)).Decode(t, &conv)
	if conv.UnreadCount != 0 || conv.Title != "trip" {
		t.Fatalf("carol's group %+v", conv)
	}
	// Carol is no member of the dm.
	if r := api.Do("GET", "/v1/conversations/"+dm.ID, carol.Token, nil); r.Status != 404 || r.Code(t) != "not_found" {
		t.Fatalf("carol on the dm: %d %s", r.Status, r.Body)
	}
}

// TestListPagination pages a user's 25 conversations 7 at a time, each once,
// in activity order.
func TestListPagination(t *testing.T) {
	svc := newService(t)
	api := svc.instance()
	me, peer := api.CreateUser(), api.CreateUser()
	var convs []conversation
	for i := range 25 {
		convs = append(convs, api.CreateConversation(me, fmt.Sprint("c", i), peer))
	}
	// Activity reorders a few.
	for _, i := range []int{3, 17, 8} {
		api.Send(convs[i].ID, peer, "bump")
	}
	want := []string{convs[8].ID, convs[17].ID, convs[3].ID}
	for i := 24; i >= 0; i-- {
		if i != 3 && i != 17 && i != 8 {
			want = append(want, convs[i].ID)
		}
	}
	var got []string
	cursor := ""
	for range 10 {
		q := "?limit=7"
		if cursor != "" {
			q += "&cursor=" + url.QueryEscape(cursor)
		}
		var list struct {
			Conversations []conversation `json:"conversations"`
			NextCursor    *string        `json:"next_cursor"`
		}
		api.Must(200, api.Do("GET", "/v1/conversations"+q, me.Token, nil)).Decode(t, &list)
		for _, c := range list.Conversations {
			got = append(got, c.ID)
		}
		if list.NextCursor == nil {
			break
		}
		cursor = *list.NextCursor
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("list order\n got %v\nwant %v", got, want)
	}
}

// TestPagingWhileOthersSend: over HTTP, a reader catching up with after and
// another paging back with before while three users send never skip or
// repeat a message; the catch-up ends with every message in commit order.
func TestPagingWhileOthersSend(t *testing.T) {
	svc := newService(t)
	api := svc.instance()
	users := []user{api.CreateUser(), api.CreateUser(), api.CreateUser()}
	reader := api.CreateUser()
	conv := api.CreateConversation(users[0], "busy", users[1], users[2], reader)
	for i := range 30 {
		api.Send(conv.ID, users[i%3], fmt.Sprint("history ", i))
	}
	start := api.Send(conv.ID, users[0], "start")

	var wg sync.WaitGroup
	const each = 25
	for _, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if r := api.Do("POST", "/v1/conversations/"+conv.ID+"/messages", u.Token, map[string]string{"body": fmt.Sprintf("live %s %d", u.Handle, i)}); r.Status != 201 {
					t.Errorf("send: %d %s", r.Status, r.Body)
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	// Back from the newest page, 6 at a time.
	var back []message
	p := api.Page(conv.ID, reader, "?limit=6")
	back = append(back, p.Messages...)
	for p.HasMore {
		p = api.Page(conv.ID, reader, "?limit=6&before="+url.QueryEscape(*p.NextCursor))
		back = append(back, p.Messages...)
	}
	// Forward from start until the senders are done and a page is short.
	var fwd []message
	cursor := start.Cursor
	for finished := false; ; {
		select {
		case <-done:
			finished = true
		default:
		}
		p := api.Page(conv.ID, reader, "?limit=5&after="+url.QueryEscape(cursor))
		fwd = append(fwd, p.Messages...)
		cursor = *p.NextCursor
		if finished && !p.HasMore {
			break
		}
	}

	rows, err := svc.pool.Query(context.Background(), `SELECT id::text FROM messages WHERE conversation_id = $1::bigint ORDER BY created_at, id`, conv.ID)
	if err != nil {
		t.Fatal(err)
	}
	var all []string
	for rows.Next() {
		var id string
		_ = rows.Scan(&id)
		all = append(all, id)
	}
	if len(all) != 31+3*each {
		t.Fatalf("%d messages stored, want %d", len(all), 31+3*each)
	}
	idx := slices.Index(all, start.ID)
	if got, want := idsOf(fwd), strings.Join(all[idx+1:], ","); got != want {
		t.Fatalf("catch-up skipped, repeated or reordered:\n got %s\nwant %s", got, want)
	}
	newest := slices.Index(all, back[0].ID)
	wantBack := slices.Clone(all[:newest+1])
	slices.Reverse(wantBack)
	if got := idsOf(back); got != strings.Join(wantBack, ",") {
		t.Fatalf("backward paging skipped or repeated:\n got %s\nwant %s", got, strings.Join(wantBack, ","))
	}
}

func idsOf(ms []message) string {
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.ID
	}
	return strings.Join(ids, ",")
}

// TestIdempotentRetries: a dozen identical requests racing with one
// Idempotency-Key store one message; every answer carries it (one 201, the
// rest 200); the key with another body is 409.
func TestIdempotentRetries(t *testing.T) {
	svc := newService(t)
	api := svc.instance()
	other := svc.instance() // retries may land on another instance
	alice, bob := api.CreateUser(), api.CreateUser()
	conv := api.CreateConversation(alice, "", bob)
	path := "/v1/conversations/" + conv.ID + "/messages"

	const n = 12
	replies := make([]reply, n)
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := api
			if i%2 == 1 {
				c = other
			}
			<-gate
			replies[i] = c.Do("POST", path, alice.Token, map[string]string{"body": "exactly once"}, "Idempotency-Key", "retry-7f3a")
		}()
	}
	close(gate)
	wg.Wait()
	created := 0
	var first message
	for i, r := range replies {
		var m message
		r.Decode(t, &m)
		switch r.Status {
		case 201:
			created++
		case 200:
			if r.Header.Get("Idempotent-Replayed") != "true" {
				t.Errorf("replay %d without Idempotent-Replayed", i)
			}
		default:
			t.Fatalf("request %d: %d %s", i, r.Status, r.Body)
		}
		if i == 0 {
			first = m
		} else if m != first {
			t.Fatalf("request %d got %+v, request 0 got %+v", i, m, first)
		}
	}
	var rows int
	if err := svc.pool.QueryRow(context.Background(), `SELECT count(*) FROM messages WHERE conversation_id = $1::bigint`, conv.ID).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if created != 1 || rows != 1 {
		t.Fatalf("%d created answers and %d rows; want 1 and 1", created, rows)
	}
	r := api.Do("POST", path, alice.Token, map[string]string{"body": "something else"}, "Idempotency-Key", "retry-7f3a")
	if r.Status != 409 || r.Code(t) != "conflict" {
		t.Fatalf("reuse with another body: %d %s", r.Status, r.Body)
	}
}

// TestInstancesShareCursors: a cursor from one instance pages on another
// (the key lives in the database), and is still bound to its conversation.
func TestInstancesShareCursors(t *testing.T) {
	svc := newService(t)
	a, b := svc.instance(), svc.instance()
	u, v := a.CreateUser(), a.CreateUser()
	conv := a.CreateConversation(u, "", v)
	other := a.CreateConversation(v, "", u)
	var ms []message
	for i := range 5 {
		ms = append(ms, a.Send(conv.ID, u, fmt.Sprint(i)))
	}
	p := a.Page(conv.ID, v, "?limit=2")
	q := b.Page(conv.ID, v, "?limit=2&before="+url.QueryEscape(*p.NextCursor))
	if len(q.Messages) != 2 || q.Messages[0].ID != ms[2].ID {
		t.Fatalf("instance b on a's cursor: %+v", q)
	}
	if r := b.Do("GET", "/v1/conversations/"+other.ID+"/messages?before="+url.QueryEscape(*p.NextCursor), v.Token, nil); r.Status != 400 || r.Code(t) != "invalid_argument" {
		t.Fatalf("cursor on another conversation: %d %s", r.Status, r.Body)
	}
}

// TestAuthorizationMatrix: who may call what.
func TestAuthorizationMatrix(t *testing.T) {
	svc := newService(t)
	api := svc.instance()
	owner, outsider := api.CreateUser(), api.CreateUser()
	conv := api.CreateConversation(owner, "")
	m := api.Send(conv.ID, owner, "mine")
	for _, tc := range []struct {
		method, path string
		body         any
	}{
		{"GET", "/v1/conversations/" + conv.ID, nil},
		{"GET", "/v1/conversations/" + conv.ID + "/messages", nil},
		{"POST", "/v1/conversations/" + conv.ID + "/messages", map[string]string{"body": "x"}},
		{"POST", "/v1/conversations/" + conv.ID + "/read", map[string]string{"message_id": m.ID}},
	} {
		if r := api.Do(tc.method, tc.path, outsider.Token, tc.body); r.Status != 404 || r.Code(t) != "not_found" {
			t.Errorf("outsider %s %s: %d %s", tc.method, tc.path, r.Status, r.Body)
		}
		if r := api.Do(tc.method, tc.path, "", tc.body); r.Status != 401 || r.Code(t) != "unauthenticated" {
			t.Errorf("anonymous %s %s: %d", tc.method, tc.path, r.Status)
		}
		if r := api.Do(tc.method, tc.path, "plt_forged", tc.body); r.Status != 401 {
			t.Errorf("forged token %s %s: %d", tc.method, tc.path, r.Status)
		}
	}
	if r := api.Do("POST", "/v1/users", owner.Token, map[string]string{"handle": "sneaky"}); r.Status != 403 || r.Code(t) != "permission_denied" {
		t.Errorf("user token on an admin endpoint: %d %s", r.Status, r.Body)
	}
}
