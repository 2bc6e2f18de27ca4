package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// world is one scenario's users and conversations, made through the API.
type world struct {
	writers []*writer
	groupID string
}

// writer is one client's user, a partner who only sends now and then (so
// that the writer's unread counts mean something), their conversation, and
// the conversation all writers share.
type writer struct {
	idx     int
	user    userJSON
	partner userJSON
	soloID  string
}

// setupWorld creates n writers, their partners and conversations, and the
// shared one, through instance base.
func setupWorld(ctx context.Context, a *api, base, adminToken, prefix string, n int) (*world, error) {
	mkUser := func(handle string) (userJSON, error) {
		r := a.do(ctx, "POST", base+"/v1/users", adminToken, map[string]string{"handle": handle, "display_name": handle})
		var u userJSON
		if r.Status != http.StatusCreated {
			return u, r.failure("create user " + handle)
		}
		return u, r.decode(&u)
	}
	mkConv := func(owner userJSON, title string, members []string) (string, error) {
		r := a.do(ctx, "POST", base+"/v1/conversations", owner.Token, map[string]any{"title": title, "member_ids": members})
		var c conversationJSON
		if r.Status != http.StatusCreated {
			return "", r.failure("create conversation " + title)
		}
		return c.ID, r.decode(&c)
	}
	w := &world{}
	var all []string
	for i := range n {
		u, err := mkUser(fmt.Sprintf("%s_w%d", prefix, i))
		if err != nil {
			return nil, err
		}
		p, err := mkUser(fmt.Sprintf("%s_p%d", prefix, i))
		if err != nil {
			return nil, err
		}
		solo, err := mkConv(u, fmt.Sprintf("%s solo %d", prefix, i), []string{p.ID})
		if err != nil {
			return nil, err
		}
		w.writers = append(w.writers, &writer{idx: i, user: u, partner: p, soloID: solo})
		all = append(all, u.ID)
	}
	g, err := mkConv(w.writers[0].user, prefix+" group", all[1:])
	if err != nil {
		return nil, err
	}
	w.groupID = g
	return w, nil
}

// op is one request a client made.
type op struct {
	Client int
	Kind   string // send, ping, history, page2, list, conversation, unread, me
	Inst   int
	Start  time.Time
	End    time.Time
	Class  string
	Status int
	Source string // X-Read-Source of a read
	Drain  bool   // made after the after phase, finishing retries

	// A send attempt.
	Key string

	// A read: what it showed. Newest is, per conversation it covers, the
	// time of the newest message it showed (zero: none); Unread the
	// counts. Check names the acknowledged send whose writer's next read
	// this is (read-your-writes), AbortCheck a send the client hung up on;
	// HasMsg says whether a history page showed that send's message.
	Newest     map[string]time.Time
	Unread     map[string]int64
	Check      string
	AbortCheck string
	HasMsg     bool
}

// send is one logical send: a key, retried until acknowledged.
type send struct {
	Key    string
	Client int
	Conv   string
	Body   string
	Ping   bool // the partner's

	FirstStart time.Time
	Attempts   int
	Acked      bool
	AckedAt    time.Time
	AckInst    int
	MsgID      string
	MsgAt      time.Time
	Failed     string // a definite failure (4xx): given up
	Aborted    bool   // the client hung up on an attempt on purpose
	// AbortReadAt is when the reads after a hang-up began: a row stored
	// before was made by the attempt hung up on, not by the retry.
	AbortReadAt time.Time

	first   int // the instance of the first attempt (later ones alternate)
	retryAt time.Time
}

// recorder collects every op and send of a scenario.
type recorder struct {
	mu    sync.Mutex
	ops   []op
	sends map[string]*send
}

func (r *recorder) add(o op) {
	r.mu.Lock()
	r.ops = append(r.ops, o)
	r.mu.Unlock()
}

// workload runs the clients of one scenario.
type workload struct {
	api       *api
	bases     []string
	world     *world
	rec       *recorder
	rate      float64 // requests per second per client
	runID     string
	draining  atomic.Bool
	abortFrom atomic.Int64 // unix nanos: clients hang up on sends from then (0: never)
	abortTo   atomic.Int64
	settle    time.Duration // after hanging up, how long before the checking reads
	sendP50   atomic.Int64  // nanoseconds: a typical send's latency (for abort timing)
}

// run runs every client until ctx ends or, once draining, until the
// client has no send left to retry (or drainCtx ends).
func (wl *workload) run(ctx, drainCtx context.Context) {
	var wg sync.WaitGroup
	for _, w := range wl.world.writers {
		wg.Go(func() { wl.client(ctx, drainCtx, w) })
	}
	wg.Wait()
}

// client is one writer's loop (see the package doc).
func (wl *workload) client(ctx, drainCtx context.Context, w *writer) {
	rng := rand.New(rand.NewPCG(uint64(w.idx)+1, uint64(time.Now().UnixNano())))
	interval := time.Duration(float64(time.Second) / wl.rate)
	next := time.Now()
	pace := func(c context.Context) bool {
		now := time.Now()
		if next.Before(now.Add(-interval)) {
			next = now // behind (a slow request): no burst to catch up
		}
		next = next.Add(interval)
		if d := time.Until(next); d > 0 {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-c.Done():
				return false
			case <-t.C:
			}
		}
		return c.Err() == nil
	}
	n := len(wl.bases)
	turn := 0
	reads := 0 // background reads since the last send began
	var pending *send
	var lastAck *send
	checkKind := 0
	for {
		c := ctx
		if wl.draining.Load() {
			if pending == nil {
				return
			}
			c = drainCtx
		}
		if !pace(c) {
			return
		}
		drain := wl.draining.Load()
		switch {
		case pending != nil && !time.Now().Before(pending.retryAt):
			inst := (pending.first + pending.Attempts) % n
			done := wl.attempt(c, rng, w, pending, inst, drain)
			if done {
				if pending.Acked && !pending.Ping {
					lastAck = pending
				}
				pending = nil
			}
		case pending != nil:
			wl.backgroundRead(c, rng, w, drain)
		case lastAck != nil:
			// The writer's next read after an acknowledged send: on
			// another instance than the one that acknowledged it.
			kinds := []string{"history", "list", "conversation", "unread"}
			if lastAck.Conv != w.soloID {
				kinds = kinds[:3] // others send there too: unread says nothing
			}
			kind := kinds[checkKind%len(kinds)]
			checkKind++
			wl.read(c, w, kind, lastAck.Conv, (lastAck.AckInst+1)%n, lastAck, drain)
			lastAck = nil
		case drain:
			return
		case reads < 3:
			// Mostly reads, as a chat client: three between two sends.
			reads++
			wl.backgroundRead(c, rng, w, drain)
		default:
			reads = 0
			turn++
			s := &send{Client: w.idx, Conv: w.soloID, first: (turn + w.idx) % n}
			switch {
			case turn%4 == 1:
				s.Ping = true
			case turn%3 == 0:
				s.Conv = wl.world.groupID
			}
			s.Key = fmt.Sprintf("%s-%d-%d", wl.runID, w.idx, turn)
			s.Body = "chaos " + s.Key
			wl.rec.mu.Lock()
			wl.rec.sends[s.Key] = s
			wl.rec.mu.Unlock()
			pending = s
		}
	}
}

// attempt makes one attempt of s on instance inst and reports whether s is
// settled (acknowledged, or failed for good).
func (wl *workload) attempt(ctx context.Context, rng *rand.Rand, w *writer, s *send, inst int, drain bool) bool {
	tok := w.user.Token
	kind := "send"
	if s.Ping {
		tok, kind = w.partner.Token, "ping"
	}
	rctx := ctx
	abort := false
	if now := time.Now().UnixNano(); !s.Ping && !drain && now >= wl.abortFrom.Load() && now < wl.abortTo.Load() && wl.abortFrom.Load() != 0 && rng.IntN(2) == 0 {
		// Hang up in the middle of the send: after a random share of a
		// typical send's time.
		var cancel context.CancelFunc
		rctx, cancel = context.WithCancel(ctx)
		d := time.Duration(rng.Float64() * 1.5 * float64(max(wl.sendP50.Load(), int64(time.Millisecond))))
		t := time.AfterFunc(d, cancel)
		defer t.Stop()
		defer cancel()
		abort = true
	}
	if s.Attempts == 0 {
		s.FirstStart = time.Now()
	}
	s.Attempts++
	r := wl.api.do(rctx, "POST", wl.bases[inst]+"/v1/conversations/"+s.Conv+"/messages", tok,
		map[string]string{"body": s.Body}, "Idempotency-Key", s.Key)
	cl := r.class()
	if abort && r.Err != nil && ctx.Err() == nil {
		cl = "aborted"
	}
	wl.rec.add(op{Client: w.idx, Kind: kind, Inst: inst, Start: r.Start, End: r.End, Class: cl, Status: r.Status, Key: s.Key, Drain: drain})
	switch {
	case cl == "ok":
		var m messageJSON
		if err := r.decode(&m); err != nil {
			s.Failed = err.Error()
			return true
		}
		s.Acked, s.AckedAt, s.AckInst, s.MsgID, s.MsgAt = true, r.End, inst, m.ID, m.CreatedAt
		if !abort {
			wl.noteSendLatency(r.latency())
		}
		return true
	case cl == "aborted":
		s.Aborted = true
		// The client does not know whether it went through. Once the server
		// has had time to finish, the writer's next reads must show it if it
		// committed; then the client retries the key.
		t := time.NewTimer(wl.settle)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		if s.AbortReadAt.IsZero() {
			s.AbortReadAt = time.Now()
		}
		for i := range len(wl.bases) {
			wl.read(ctx, w, "history", s.Conv, i, nil, drain, s.Key)
		}
		s.retryAt = time.Now()
		return false
	case cl == "http_4xx":
		s.Failed = fmt.Sprintf("HTTP %d %.200s", r.Status, r.Body)
		return true
	case cl == "unavailable":
		s.retryAt = time.Now().Add(min(r.retryAfter(), 2*time.Second))
	default:
		s.retryAt = time.Now().Add(200 * time.Millisecond)
	}
	return false
}

// noteSendLatency keeps a rough running median of acknowledged sends.
func (wl *workload) noteSendLatency(d time.Duration) {
	cur := wl.sendP50.Load()
	if cur == 0 {
		wl.sendP50.Store(int64(d))
		return
	}
	step := cur / 16
	if int64(d) > cur {
		wl.sendP50.Store(cur + step)
	} else {
		wl.sendP50.Store(cur - step)
	}
}

// backgroundRead is one of the reads a client makes besides its checks.
func (wl *workload) backgroundRead(ctx context.Context, rng *rand.Rand, w *writer, drain bool) {
	inst := rng.IntN(len(wl.bases))
	switch rng.IntN(7) {
	case 0, 1:
		wl.read(ctx, w, "history", wl.world.groupID, inst, nil, drain)
	case 2:
		wl.read(ctx, w, "page2", wl.world.groupID, inst, nil, drain)
	case 3:
		wl.read(ctx, w, "list", "", inst, nil, drain)
	case 4:
		wl.read(ctx, w, "conversation", w.soloID, inst, nil, drain)
	case 5:
		wl.read(ctx, w, "unread", "", inst, nil, drain)
	default:
		wl.read(ctx, w, "me", "", inst, nil, drain)
	}
}

// read makes one read of kind as w's user on instance inst and records
// what it showed. check, when set, is the acknowledged send this read must
// reflect; abortKey a send the client hung up on.
func (wl *workload) read(ctx context.Context, w *writer, kind, conv string, inst int, check *send, drain bool, abortKey ...string) {
	base := wl.bases[inst]
	var path string
	switch kind {
	case "history":
		path = "/v1/conversations/" + conv + "/messages?limit=50"
	case "page2":
		path = "/v1/conversations/" + conv + "/messages?limit=20"
	case "list":
		path = "/v1/conversations?limit=30"
	case "conversation":
		path = "/v1/conversations/" + conv
	case "unread":
		path = "/v1/unread"
	default:
		path = "/v1/me"
	}
	r := wl.api.do(ctx, "GET", base+path, w.user.Token, nil)
	if kind == "page2" && r.Status == http.StatusOK {
		// A second page, through the cursor of the first.
		var p pageJSON
		if r.decode(&p) == nil && p.NextCursor != nil {
			r2 := wl.api.do(ctx, "GET", base+path+"&before="+*p.NextCursor, w.user.Token, nil)
			r2.Start = r.Start
			r = r2
		}
	}
	o := op{Client: w.idx, Kind: kind, Inst: inst, Start: r.Start, End: r.End, Class: r.class(), Status: r.Status, Drain: drain}
	if r.Header != nil {
		o.Source = r.Header.Get("X-Read-Source")
	}
	if check != nil {
		o.Check = check.Key
	}
	if len(abortKey) > 0 {
		o.AbortCheck = abortKey[0]
	}
	if r.Status == http.StatusOK {
		wl.inspect(&o, r, conv, check, abortKey)
	}
	wl.rec.add(o)
}

// inspect records what a successful read showed.
func (wl *workload) inspect(o *op, r reply, conv string, check *send, abortKey []string) {
	switch o.Kind {
	case "history":
		var p pageJSON
		if r.decode(&p) != nil {
			o.Class = "bad_body"
			return
		}
		var newest time.Time
		var want string
		if check != nil {
			want = check.MsgID
		}
		for _, m := range p.Messages {
			if m.CreatedAt.After(newest) {
				newest = m.CreatedAt
			}
			if want != "" && m.ID == want {
				o.HasMsg = true
			}
			if len(abortKey) > 0 && m.Body == "chaos "+abortKey[0] {
				o.HasMsg = true
			}
		}
		o.Newest = map[string]time.Time{conv: newest}
	case "list":
		var l listJSON
		if r.decode(&l) != nil {
			o.Class = "bad_body"
			return
		}
		o.Newest = map[string]time.Time{}
		for _, c := range l.Conversations {
			var t time.Time
			if c.LastMessage != nil {
				t = c.LastMessage.CreatedAt
			}
			o.Newest[c.ID] = t
		}
	case "conversation":
		var c conversationJSON
		if r.decode(&c) != nil {
			o.Class = "bad_body"
			return
		}
		var t time.Time
		if c.LastMessage != nil {
			t = c.LastMessage.CreatedAt
		}
		o.Newest = map[string]time.Time{c.ID: t}
	case "unread":
		var u unreadJSON
		if r.decode(&u) != nil {
			o.Class = "bad_body"
			return
		}
		o.Unread = map[string]int64{}
		for _, c := range u.Conversations {
			o.Unread[c.ID] = c.UnreadCount
		}
	}
}

// runID names a run's keys and users (unique per run and scenario).
func runID(scenario string) string {
	return scenario + "-" + strconv.FormatInt(time.Now().UnixMilli()%1e9, 36)
}
