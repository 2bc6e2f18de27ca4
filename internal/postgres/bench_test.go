package postgres

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/parley-chat/parley/internal/chat"
)

// BenchmarkStore measures the store's hot paths on the seedVolume data set
// (130k messages, one conversation 21k deep), directly against the primary
// (prepared statements) and through PgBouncer (exec mode). Each
// sub-benchmark reports latency percentiles (p50-ms, p95-ms, p99-ms);
// the *_c8 ones run 8 concurrent callers and report throughput (ops/s).
// scripts/perf-store.sh runs it and writes docs/performance.md.
func BenchmarkStore(b *testing.B) {
	db := migratedDB(b)
	ctx := context.Background()
	direct := New(connect(b, db.PrimaryURL, pgx.QueryExecModeCacheStatement, 16))
	bouncer := New(connect(b, db.PgBouncerURL, pgx.QueryExecModeExec, 16))
	v := seedVolume(b, ctx, db, direct)
	pool := direct.Pool()

	var version string
	if err := pool.QueryRow(ctx, `SHOW server_version`).Scan(&version); err != nil {
		b.Fatal(err)
	}
	fmt.Printf("server_version: %s\n", version) // for scripts/perf-store.sh

	// The capped unread count's best index, for the comparison only (the
	// schema does not have it): an index-only count after the marker.
	if _, err := pool.Exec(ctx, `CREATE INDEX bench_messages_seq ON messages (conversation_id, seq) INCLUDE (sender_id)`); err != nil {
		b.Fatal(err)
	}
	if err := direct.Analyze(ctx); err != nil {
		b.Fatal(err)
	}

	deep := messageAtDepth(b, ctx, pool, v.hotConv, 10000)
	const limit = 50

	// Senders: one (conversation, member) pair per concurrent caller, away
	// from the hot conversation.
	var senders []chat.SendRequest
	rows, err := pool.Query(ctx, `
		SELECT conversation_id, min(user_id) FROM conversation_members
		WHERE conversation_id BETWEEN 100 AND 163 GROUP BY 1 ORDER BY 1`)
	if err != nil {
		b.Fatal(err)
	}
	for rows.Next() {
		var r chat.SendRequest
		if err := rows.Scan(&r.ConversationID, &r.SenderID); err != nil {
			b.Fatal(err)
		}
		r.Body = "benchmark message with a realistic length, about sixty bytes."
		senders = append(senders, r)
	}
	if rows.Err() != nil || len(senders) < 8 {
		b.Fatalf("senders: %v (%d)", rows.Err(), len(senders))
	}

	for _, m := range []struct {
		name string
		s    *Store
	}{{"direct", direct}, {"pgbouncer", bouncer}} {
		s, q := m.s, m.s.Pool()
		b.Run("history_first/"+m.name, func(b *testing.B) {
			measure(b, func() error {
				_, err := s.Messages(ctx, q, v.hotConvMember, v.hotConv, chat.PageRequest{Direction: chat.Newest, Limit: limit})
				return err
			})
		})
		b.Run("history_deep10k_keyset/"+m.name, func(b *testing.B) {
			measure(b, func() error {
				_, err := s.Messages(ctx, q, v.hotConvMember, v.hotConv, chat.PageRequest{Direction: chat.Before, Cursor: deep.Cursor(), Limit: limit})
				return err
			})
		})
		b.Run("history_deep10k_offset/"+m.name, func(b *testing.B) {
			measure(b, func() error {
				rows, err := q.Query(ctx, `
					SELECT id, sender_id, body, created_at FROM messages WHERE conversation_id = $1
					ORDER BY created_at DESC, id DESC OFFSET $2 LIMIT $3`, v.hotConv, 10000, limit+1)
				if err != nil {
					return err
				}
				n := 0
				for rows.Next() {
					n++
				}
				if n != limit+1 {
					return fmt.Errorf("OFFSET page has %d rows", n)
				}
				return rows.Err()
			})
		})
		b.Run("unread_counter/"+m.name, func(b *testing.B) {
			measure(b, func() error {
				_, err := s.Unread(ctx, q, v.hotUser)
				return err
			})
		})
		b.Run("unread_capped100/"+m.name, func(b *testing.B) {
			measure(b, func() error {
				rows, err := q.Query(ctx, `
					SELECT cm.conversation_id, x.n
					FROM conversation_members cm,
					LATERAL (SELECT count(*) AS n FROM (
						SELECT 1 FROM messages m
						WHERE m.conversation_id = cm.conversation_id AND m.seq > cm.last_read_seq AND m.sender_id <> $1
						LIMIT 100) y) x
					WHERE cm.user_id = $1 AND x.n > 0
					ORDER BY cm.conversation_id`, v.hotUser)
				if err != nil {
					return err
				}
				for rows.Next() {
				}
				return rows.Err()
			})
		})
		b.Run("conversation_list/"+m.name, func(b *testing.B) {
			measure(b, func() error {
				_, err := s.Conversations(ctx, q, v.hotUser, chat.PageRequest{Direction: chat.Newest, Limit: chat.DefaultConvListLimit})
				return err
			})
		})
		b.Run("send/"+m.name, func(b *testing.B) {
			measure(b, func() error {
				_, _, err := s.SendMessage(ctx, senders[0])
				return err
			})
		})
		b.Run("history_first_c8/"+m.name, func(b *testing.B) {
			measureConcurrent(b, 8, func(int) error {
				_, err := s.Messages(ctx, q, v.hotConvMember, v.hotConv, chat.PageRequest{Direction: chat.Newest, Limit: limit})
				return err
			})
		})
		b.Run("send_c8/"+m.name, func(b *testing.B) {
			measureConcurrent(b, 8, func(w int) error {
				_, _, err := s.SendMessage(ctx, senders[w])
				return err
			})
		})
	}
}

// measure runs op b.N times and reports its latency percentiles.
func measure(b *testing.B, op func() error) {
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		if err := op(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	reportPercentiles(b, lat)
}

// measureConcurrent runs op b.N times over n concurrent callers (op gets
// the caller's index) and reports throughput and latency percentiles.
func measureConcurrent(b *testing.B, n int, op func(worker int) error) {
	var next atomic.Int64
	lats := make([][]time.Duration, n)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for w := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				if err := op(w); err != nil {
					b.Error(err)
					return
				}
				lats[w] = append(lats[w], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
	reportPercentiles(b, slices.Concat(lats...))
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		i := int(p * float64(len(lat)-1))
		return float64(lat[i].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.95), "p95-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}
