// Package seed makes a realistic demo data set through the store: users,
// DMs and groups, and long, Zipf-skewed histories (a few conversations hold
// most messages, a few users are in most conversations), read markers a
// little behind. The same seed makes the same data set.
package seed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/postgres"
)

// Config sizes a demo data set.
type Config struct {
	Users         int
	Conversations int // 0: three per user
	Messages      int
	// HandlePrefix: handles are <prefix>00001, <prefix>00002, …; seeding the
	// same database twice needs another prefix.
	HandlePrefix string
	// TokensOut, when set, receives every user's id, handle and token
	// (tab-separated, mode 0600).
	TokensOut string
	Seed      uint64
	Out       io.Writer // progress and the summary (nil: none)
}

// Validate checks the sizes and the prefix.
func (c Config) Validate() error {
	if c.Users < 2 || c.Messages < 0 || c.Conversations < 0 {
		return errors.New("users must be at least 2, messages and conversations not negative")
	}
	if err := chat.ValidateHandle(c.HandlePrefix + "00001"); err != nil {
		return fmt.Errorf("handle prefix: %s", chat.ErrorMessage(err))
	}
	return nil
}

// ErrAlreadySeeded: the handles the seed would create exist.
var ErrAlreadySeeded = errors.New("already seeded")

// Result is what a seed run made.
type Result struct {
	Users         int
	Conversations int
	Messages      int64
	Elapsed       time.Duration
	// The most active user and their busiest conversation, for the example.
	ExampleUser  chat.User
	ExampleToken string
	ExampleConv  int64
}

// PrintExample writes what was made and curl lines that use the example
// user's token against the API at httpAddr.
func (r Result) PrintExample(w io.Writer, httpAddr string) {
	base := "http://" + httpAddr
	fmt.Fprintf(w, `
Seeded %d users, %d conversations, %d messages in %v.
Try it as %s (%s), a member of the busiest conversation:

  export TOKEN=%s
  curl -s -H "Authorization: Bearer $TOKEN" %s/v1/me
  curl -s -H "Authorization: Bearer $TOKEN" '%s/v1/conversations?limit=5'
  curl -s -H "Authorization: Bearer $TOKEN" '%s/v1/conversations/%d/messages?limit=20'
  curl -s -H "Authorization: Bearer $TOKEN" %s/v1/unread
  curl -s -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
       -H "Idempotency-Key: $(date +%%s%%N)" -d '{"body":"hello from curl"}' %s/v1/conversations/%d/messages

`, r.Users, r.Conversations, r.Messages, r.Elapsed.Round(time.Millisecond), r.ExampleUser.Handle, r.ExampleUser.DisplayName,
		r.ExampleToken, base, base, base, r.ExampleConv, base, base, r.ExampleConv)
}

var (
	firstNames = []string{"Ada", "Alan", "Barbara", "Claude", "Dennis", "Edsger", "Frances", "Grace", "Hedy", "Ivan",
		"John", "Ken", "Leslie", "Margaret", "Niklaus", "Radia", "Rob", "Shafi", "Tim", "Vint", "Whitfield", "Xiao", "Yukihiro", "Zhang"}
	lastNames = []string{"Lovelace", "Turing", "Liskov", "Shannon", "Ritchie", "Dijkstra", "Allen", "Hopper", "Lamarr",
		"Sutherland", "Backus", "Thompson", "Lamport", "Hamilton", "Wirth", "Perlman", "Pike", "Goldwasser", "Berners-Lee", "Cerf"}
	words = strings.Fields(`the a deploy is done lunch anyone? ok sounds good I think we should ship it today tomorrow
		meeting at three review please merged thanks! looks great can you check the logs latency went down after the
		index change replica lag back to zero cache hit rate ninety percent coffee weekend plans :) see you soon`)
	groupTitles = []string{"team", "release", "on-call", "book club", "lunch", "design review", "incident", "trip", "family", "launch"}
)

// zipfWeights returns n weights 1/(k+1)^s, normalized to sum to 1.
func zipfWeights(n int, s float64) []float64 {
	w := make([]float64, n)
	sum := 0.0
	for k := range w {
		w[k] = 1 / math.Pow(float64(k+1), s)
		sum += w[k]
	}
	for k := range w {
		w[k] /= sum
	}
	return w
}

// progress prints "label done/total" lines at most every 500ms.
type progress struct {
	out   io.Writer
	label string
	total int64
	done  atomic.Int64
	mu    sync.Mutex
	last  time.Time
	start time.Time
}

func newProgress(out io.Writer, label string, total int) *progress {
	return &progress{out: out, label: label, total: int64(total), start: time.Now()}
}

func (p *progress) add(n int) {
	d := p.done.Add(int64(n))
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Since(p.last) < 500*time.Millisecond && d < p.total {
		return
	}
	p.last = time.Now()
	fmt.Fprintf(p.out, "  %-13s %8d / %-8d %5.1fs\n", p.label, d, p.total, time.Since(p.start).Seconds())
}

// parallel runs fn(i) for i in [0, n) on workers goroutines; the first error stops it.
func parallel(ctx context.Context, n, workers int, fn func(ctx context.Context, i int) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(workers, 1))
	for i := range n {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error { return fn(gctx, i) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

// Run creates the data set through the store, printing progress to c.Out.
// A database seeded before with the same handle prefix gives
// ErrAlreadySeeded.
func Run(ctx context.Context, store *postgres.Store, c Config) (Result, error) {
	start := time.Now()
	if c.Conversations == 0 {
		c.Conversations = 3 * c.Users
	}
	rng := rand.New(rand.NewPCG(c.Seed, 0x9a41))
	out := c.Out
	if out == nil {
		out = io.Discard
	}
	fmt.Fprintf(out, "seeding %d users, %d conversations, %d messages\n", c.Users, c.Conversations, c.Messages)

	// Users. Popularity rank = index: user 0 is in the most conversations.
	users := make([]chat.User, c.Users)
	tokens := make([]string, c.Users)
	names := make([]string, c.Users)
	for i := range names {
		names[i] = firstNames[rng.IntN(len(firstNames))] + " " + lastNames[rng.IntN(len(lastNames))]
	}
	pu := newProgress(out, "users", c.Users)
	err := parallel(ctx, c.Users, 4, func(ctx context.Context, i int) error {
		u, tok, _, err := store.CreateUser(ctx, fmt.Sprintf("%s%05d", c.HandlePrefix, i+1), names[i])
		if chat.ErrorCode(err) == chat.ECONFLICT {
			return fmt.Errorf("%w: handle %s%05d exists: this database was seeded with prefix %q; pass another handle prefix",
				ErrAlreadySeeded, c.HandlePrefix, i+1, c.HandlePrefix)
		}
		if err != nil {
			return fmt.Errorf("create user: %w", err)
		}
		users[i], tokens[i] = u, tok
		pu.add(1)
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	if c.TokensOut != "" {
		var b strings.Builder
		for i, u := range users {
			fmt.Fprintf(&b, "%d\t%s\t%s\n", u.ID, u.Handle, tokens[i])
		}
		if err := os.WriteFile(c.TokensOut, []byte(b.String()), 0o600); err != nil {
			return Result{}, fmt.Errorf("tokens: %w", err)
		}
	}

	// Conversations: 75% DMs, the rest groups of 3–12; members drawn by a
	// Zipf over user popularity.
	userZipf := rand.NewZipf(rng, 1.2, 4, uint64(c.Users-1))
	pick := func() int { return int(userZipf.Uint64()) }
	type plan struct {
		title   string
		members []int // indexes into users; [0] is the creator
	}
	plans := make([]plan, c.Conversations)
	for i := range plans {
		size := 2
		title := ""
		if rng.IntN(4) == 0 {
			size = min(c.Users, 3+rng.IntN(10))
			title = groupTitles[rng.IntN(len(groupTitles))]
		}
		seen := map[int]bool{}
		var ms []int
		for len(ms) < size {
			u := pick()
			if len(ms) == 0 && rng.IntN(3) == 0 {
				u = rng.IntN(c.Users) // some creators from the long tail
			}
			if len(ms) > 0 && rng.IntN(2) == 0 {
				u = rng.IntN(c.Users)
			}
			if !seen[u] {
				seen[u] = true
				ms = append(ms, u)
			}
		}
		plans[i] = plan{title: title, members: ms}
	}
	convIDs := make([]int64, c.Conversations)
	pc := newProgress(out, "conversations", c.Conversations)
	err = parallel(ctx, c.Conversations, 4, func(ctx context.Context, i int) error {
		p := plans[i]
		others := make([]int64, 0, len(p.members)-1)
		for _, m := range p.members[1:] {
			others = append(others, users[m].ID)
		}
		conv, _, err := store.CreateConversation(ctx, users[p.members[0]].ID, p.title, others)
		if err != nil {
			return fmt.Errorf("create conversation: %w", err)
		}
		convIDs[i] = conv.ID
		pc.add(1)
		return nil
	})
	if err != nil {
		return Result{}, err
	}

	// Messages: conversation popularity is a Zipf (s = 1.1) over a random
	// ranking, so a few conversations have long histories. Times spread
	// over the last 30 days, in order within each conversation.
	counts := make([]int, c.Conversations)
	weights := zipfWeights(c.Conversations, 1.1)
	rank := rng.Perm(c.Conversations)
	assigned := 0
	for k, conv := range rank {
		counts[conv] = int(float64(c.Messages) * weights[k])
		assigned += counts[conv]
	}
	for assigned < c.Messages { // rounding remainder to the long tail
		counts[rng.IntN(c.Conversations)]++
		assigned++
	}
	busiest := rank[0]
	now := time.Now().Add(-time.Minute)
	span := 30 * 24 * time.Hour
	const batchMessages = 20000
	var batches [][]postgres.HistoryImport
	var cur []postgres.HistoryImport
	size := 0
	for i, n := range counts {
		if n == 0 {
			continue
		}
		p := plans[i]
		h := postgres.HistoryImport{ConversationID: convIDs[i], Messages: make([]chat.Message, n), ReadUpTo: map[int64]int64{}}
		// n times uniform over the last 30 days, sorted; distinct at µs.
		offs := make([]float64, n)
		for j := range offs {
			offs[j] = rng.Float64()
		}
		slices.Sort(offs)
		for j := range h.Messages {
			at := now.Add(-span + time.Duration(offs[j]*float64(span))).Truncate(time.Microsecond)
			if j > 0 && !at.After(h.Messages[j-1].CreatedAt) {
				at = h.Messages[j-1].CreatedAt.Add(time.Microsecond)
			}
			sender := users[p.members[rng.IntN(len(p.members))]].ID
			ws := make([]string, 1+rng.IntN(18))
			for w := range ws {
				ws[w] = words[rng.IntN(len(words))]
			}
			h.Messages[j] = chat.Message{SenderID: sender, Body: strings.Join(ws, " "), CreatedAt: at}
		}
		for _, m := range p.members {
			behind := 0
			if rng.IntN(3) == 0 {
				behind = rng.IntN(min(n, 60) + 1)
			}
			h.ReadUpTo[users[m].ID] = int64(n - behind)
		}
		cur = append(cur, h)
		size += n
		if size >= batchMessages {
			batches, cur, size = append(batches, cur), nil, 0
		}
	}
	if len(cur) > 0 {
		batches = append(batches, cur)
	}
	pm := newProgress(out, "messages", c.Messages)
	var stored atomic.Int64
	err = parallel(ctx, len(batches), 2, func(ctx context.Context, i int) error {
		n, err := store.ImportHistory(ctx, batches[i])
		if err != nil {
			return err
		}
		stored.Add(n)
		pm.add(int(n))
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	fmt.Fprintln(out, "  vacuum analyze")
	if err := store.Analyze(ctx); err != nil {
		return Result{}, fmt.Errorf("analyze: %w", err)
	}
	// The example: the busiest conversation's most popular member.
	ex := plans[busiest].members[0]
	for _, m := range plans[busiest].members {
		ex = min(ex, m)
	}
	res := Result{Users: c.Users, Conversations: c.Conversations, Messages: stored.Load(), Elapsed: time.Since(start),
		ExampleUser: users[ex], ExampleToken: tokens[ex], ExampleConv: convIDs[busiest]}
	return res, nil
}
