package integration

import (
	"testing"

	"github.com/parley-chat/parley/internal/chat"
)

// TestReadYourWritesEveryRead: after each kind of write — a send, a
// mark-read, a new conversation — made through one instance, the writer's
// next read of each kind — the conversation list, the unread counts, the
// single conversation — through the other instance reflects it, while the
// replica is behind yet serving reads (lagReplica); with the replica rolled
// out, then with the cache and the replica. Each of those reads must have
// been held on the primary because the replica had not replayed the write
// (reason token_ahead, counted exactly), and in the first configuration
// another member's read of the same conversation from the replica is
// stale: the replica was in use, only the write's position kept the writer
// off it. A user created while the replica lags is known on both instances
// at once and reads back their first writes.
func TestReadYourWritesEveryRead(t *testing.T) {
	svc := newService(t)
	a, b := svc.instance(instanceOptions{patientCache: true}), svc.instance(instanceOptions{patientCache: true})
	// Carol never writes: her reads go to the replica whatever it lags.
	alice, bob, carol := a.CreateUser(), a.CreateUser(), a.CreateUser()
	svc.optimize(a, false, true)
	svc.lagReplica(t)

	// held counts the reads kept on the primary by a write the replica had
	// not replayed, on both instances.
	held := func() float64 {
		var n float64
		for _, c := range []*client{a, b} {
			for _, ep := range []string{chat.EndpointConversationList, chat.EndpointConversation, chat.EndpointUnreadCount, chat.EndpointMessageHistory} {
				n += counterMetric(t, c.reg, "parley_db_reads_total", map[string]string{"endpoint": ep, "reason": "token_ahead"})
			}
		}
		return n
	}
	// Alice's three reads through b.
	list := func() conversationList {
		var l conversationList
		b.Must(200, b.Do("GET", "/v1/conversations", alice.Token, nil)).Decode(t, &l)
		return l
	}
	unread := func() unreadSummary {
		var u unreadSummary
		b.Must(200, b.Do("GET", "/v1/unread", alice.Token, nil)).Decode(t, &u)
		return u
	}
	one := func(id string) conversation {
		var c conversation
		b.Must(200, b.Do("GET", "/v1/conversations/"+id, alice.Token, nil)).Decode(t, &c)
		return c
	}
	unreadIn := func(u unreadSummary, id string) int64 {
		for _, c := range u.Conversations {
			if c.ID == id {
				return c.UnreadCount
			}
		}
		return 0
	}
	// step runs write, then checks Alice's three reads (each held on the
	// primary, so n reads add n to held).
	step := func(t *testing.T, what string, write func(), check func()) {
		t.Helper()
		write()
		before := held()
		check()
		if n := held() - before; n != 3 {
			t.Errorf("after %s: %v of the writer's 3 reads were held on the primary by the write; the replica served the others", what, n)
		}
	}

	for _, cfg := range []struct {
		name  string
		cache bool
	}{{"replica", false}, {"cache and replica", true}} {
		t.Run(cfg.name, func(t *testing.T) {
			for _, ep := range chat.RolloutEndpoints() {
				svc.setRollout(a, ep, rolloutUpdate{Percent: ptr(100), Cache: ptr(cfg.cache), Replica: ptr(true)})
			}
			// Bob writes to Alice in two conversations; the replica replays it.
			c1 := a.CreateConversation(bob, "one", alice, carol)
			a.Send(c1.ID, bob, "in one")
			c2 := a.CreateConversation(bob, "two", alice)
			fromBob := a.Send(c2.ID, bob, "in two")
			// Carol's user record, made by these writes, is young: until it
			// is older than the token TTL her position is its floor, the
			// primary's position read on her first read (cache.UserToken).
			// Read now, it is replayed below; read first after Alice's
			// send, it would hold Carol on the primary too.
			b.Must(200, b.Do("GET", "/v1/conversations", carol.Token, nil))
			svc.replayed(t)
			if u := unread(); unreadIn(u, c1.ID) != 1 || unreadIn(u, c2.ID) != 1 {
				t.Fatalf("alice's unread before: %+v", u)
			}
			// With the cache, Alice's views are cached before each write.
			warm := func(ids ...string) {
				if !cfg.cache {
					return
				}
				for range 2 {
					list()
					unread()
					for _, id := range ids {
						one(id)
					}
				}
				for _, path := range append([]string{"/v1/conversations", "/v1/unread"}, func() []string {
					var ps []string
					for _, id := range ids {
						ps = append(ps, "/v1/conversations/"+id)
					}
					return ps
				}()...) {
					if src := b.Must(200, b.Do("GET", path, alice.Token, nil)).Source(); src != "cache" {
						t.Fatalf("%s not cached before the write (%s)", path, src)
					}
				}
			}

			warm(c1.ID, c2.ID)
			var mine message
			step(t, "a send", func() {
				mine = a.Send(c1.ID, alice, "alice in one")
				if cfg.cache {
					return
				}
				var c conversation
				r := b.Must(200, b.Do("GET", "/v1/conversations/"+c1.ID, carol.Token, nil))
				r.Decode(t, &c)
				if r.Source() != "replica" || c.LastMessage == nil || c.LastMessage.ID == mine.ID {
					t.Errorf("Carol's read of the conversation right after Alice's send: from %s, last message %+v; want the replica, behind", r.Source(), c.LastMessage)
				}
			}, func() {
				if l := list(); len(l.Conversations) == 0 || l.Conversations[0].ID != c1.ID || l.Conversations[0].LastMessage == nil || l.Conversations[0].LastMessage.ID != mine.ID {
					t.Errorf("list after a send: %+v", l)
				}
				// Sending moved her marker past Bob's message.
				if u := unread(); unreadIn(u, c1.ID) != 0 || unreadIn(u, c2.ID) != 1 {
					t.Errorf("unread after a send: %+v", u)
				}
				if c := one(c1.ID); c.LastMessage == nil || c.LastMessage.ID != mine.ID || c.UnreadCount != 0 {
					t.Errorf("the conversation after a send: %+v", c)
				}
			})

			warm(c1.ID, c2.ID)
			step(t, "a mark-read", func() {
				a.Must(200, a.Do("POST", "/v1/conversations/"+c2.ID+"/read", alice.Token, map[string]string{"message_id": fromBob.ID}))
			}, func() {
				if u := unread(); u.Total != 0 || len(u.Conversations) != 0 {
					t.Errorf("unread after marking read: %+v", u)
				}
				if l := list(); len(l.Conversations) < 2 || l.Conversations[1].ID != c2.ID || l.Conversations[1].UnreadCount != 0 {
					t.Errorf("list after marking read: %+v", l)
				}
				if c := one(c2.ID); c.UnreadCount != 0 {
					t.Errorf("the conversation after marking read: %+v", c)
				}
			})

			warm(c1.ID, c2.ID)
			var c3 conversation
			step(t, "a new conversation", func() {
				c3 = a.CreateConversation(alice, "three", bob)
			}, func() {
				if l := list(); len(l.Conversations) == 0 || l.Conversations[0].ID != c3.ID {
					t.Errorf("list after a new conversation: %+v", l)
				}
				if u := unread(); u.Total != 0 {
					t.Errorf("unread after a new conversation: %+v", u)
				}
				if c := one(c3.ID); c.ID != c3.ID || c.Title != "three" {
					t.Errorf("the new conversation: %+v", c)
				}
			})
		})
	}

	t.Run("a user created while the replica lags", func(t *testing.T) {
		dave := a.CreateUser()
		for _, in := range []*client{a, b} { // b has never seen this token
			if r := in.Must(200, in.Do("GET", "/v1/me", dave.Token, nil)); r.Source() != "primary" {
				t.Errorf("/v1/me of a new user: X-Read-Source %q, want primary", r.Source())
			}
		}
		c := b.CreateConversation(dave, "new", alice)
		m := b.Send(c.ID, dave, "first words")
		before := held()
		p := a.Page(c.ID, dave, "")
		var got conversation
		a.Must(200, a.Do("GET", "/v1/conversations/"+c.ID, dave.Token, nil)).Decode(t, &got)
		var l conversationList
		a.Must(200, a.Do("GET", "/v1/conversations", dave.Token, nil)).Decode(t, &l)
		if len(p.Messages) != 1 || p.Messages[0].ID != m.ID || got.LastMessage == nil || got.LastMessage.ID != m.ID ||
			len(l.Conversations) != 1 || l.Conversations[0].ID != c.ID {
			t.Errorf("the new user's first writes, read back on the other instance: page %+v, conversation %+v, list %+v", p, got, l)
		}
		if n := held() - before; n != 3 {
			t.Errorf("%v of the new user's 3 reads held on the primary by the write, want 3", n)
		}
	})
}
