package postgres

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/parley-chat/parley/internal/chat"
)

// planNode is one node of EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON).
type planNode struct {
	NodeType    string     `json:"Node Type"`
	Relation    string     `json:"Relation Name"`
	Index       string     `json:"Index Name"`
	IndexCond   string     `json:"Index Cond"`
	Filter      string     `json:"Filter"`
	Direction   string     `json:"Scan Direction"`
	ActualRows  float64    `json:"Actual Rows"`
	ActualLoops float64    `json:"Actual Loops"`
	SharedHit   int64      `json:"Shared Hit Blocks"`
	SharedRead  int64      `json:"Shared Read Blocks"`
	Plans       []planNode `json:"Plans"`
}

type plan struct {
	Root planNode `json:"Plan"`
	text string
}

// buffers is the plan's shared buffers touched (hit + read), children included.
func (p plan) buffers() int64 { return p.Root.SharedHit + p.Root.SharedRead }

func (p plan) walk(fn func(n planNode)) {
	var rec func(n planNode)
	rec = func(n planNode) {
		fn(n)
		for _, c := range n.Plans {
			rec(c)
		}
	}
	rec(p.Root)
}

// nodes returns the nodes for which match is true.
func (p plan) nodes(match func(n planNode) bool) []planNode {
	var out []planNode
	p.walk(func(n planNode) {
		if match(n) {
			out = append(out, n)
		}
	})
	return out
}

func (p plan) String() string { return p.text }

// explain runs EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) of sql with args.
// generic=false plans with the parameter values (a custom plan, as the
// first executions of a prepared statement and every exec-mode execution
// get); generic=true forces the generic plan that a cached prepared
// statement switches to.
func explain(t *testing.T, ctx context.Context, pool *pgxpool.Pool, generic bool, sql string, args ...any) plan {
	t.Helper()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	var raw string
	if !generic {
		err = conn.QueryRow(ctx, `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) `+sql, args...).Scan(&raw)
	} else {
		if _, err := conn.Exec(ctx, `SET plan_cache_mode = force_generic_plan`); err != nil {
			t.Fatal(err)
		}
		defer conn.Exec(context.WithoutCancel(ctx), `RESET plan_cache_mode; DEALLOCATE explained`, pgx.QueryExecModeSimpleProtocol)
		if _, err := conn.Exec(ctx, `PREPARE explained AS `+sql, pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Fatalf("prepare: %v", err)
		}
		// EXECUTE takes no bind parameters: the test's own values are
		// written as literals (they are never input).
		lits := make([]string, len(args))
		for i, a := range args {
			lits[i] = literal(t, a)
		}
		err = conn.QueryRow(ctx, `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE explained(`+strings.Join(lits, ", ")+`)`,
			pgx.QueryExecModeSimpleProtocol).Scan(&raw)
	}
	if err != nil {
		t.Fatalf("explain: %v\n%s", err, sql)
	}
	var ps []plan
	if err := json.Unmarshal([]byte(raw), &ps); err != nil || len(ps) != 1 {
		t.Fatalf("plan JSON: %v", err)
	}
	ps[0].text = raw
	return ps[0]
}

// literal renders a test value as an SQL literal for EXPLAIN EXECUTE.
func literal(t *testing.T, v any) string {
	switch v := v.(type) {
	case int:
		return strconv.Itoa(v)
	case int64:
		return strconv.FormatInt(v, 10)
	case time.Time:
		return "'" + v.UTC().Format(time.RFC3339Nano) + "'::timestamptz"
	case pgtype.Timestamptz:
		if v.InfinityModifier == pgtype.Infinity {
			return "'infinity'::timestamptz"
		}
		return "'" + v.Time.UTC().Format(time.RFC3339Nano) + "'::timestamptz"
	}
	t.Fatalf("no literal for %T", v)
	return ""
}

func nodeType(types ...string) func(planNode) bool {
	return func(n planNode) bool {
		for _, ty := range types {
			if n.NodeType == ty {
				return true
			}
		}
		return false
	}
}

func onRelation(rel string) func(planNode) bool {
	return func(n planNode) bool { return n.Relation == rel }
}

// mustNot fails when the plan has a node match accepts.
func mustNot(t *testing.T, p plan, what string, match func(planNode) bool) {
	t.Helper()
	if ns := p.nodes(match); len(ns) > 0 {
		t.Fatalf("plan has %s (%s on %q):\n%s", what, ns[0].NodeType, ns[0].Relation, p)
	}
}

// mustReadMembershipsByUser fails unless the plan reads the user's
// memberships through conversation_members_by_user (an index, index-only or
// bitmap scan) exactly once.
func mustReadMembershipsByUser(t *testing.T, p plan) {
	t.Helper()
	if ns := p.nodes(func(n planNode) bool { return n.Index == "conversation_members_by_user" }); len(ns) != 1 || ns[0].ActualLoops != 1 {
		t.Fatalf("memberships must come from one scan of conversation_members_by_user:\n%s", p)
	}
}

// TestHotQueryPlans pins the plans of the three hot queries (history page,
// unread counts, conversation list) and of the single-conversation read on
// 130k messages, custom and generic, and fails when a plan changes for the
// worse: a sequential scan, a sort of history, a bound that is a filter
// instead of an index condition, buffers that grow with depth or with the
// size of tables the query should not read.
func TestHotQueryPlans(t *testing.T) {
	db := migratedDB(t)
	ctx := testCtx(t)
	s := New(connect(t, db.PrimaryURL, pgx.QueryExecModeCacheStatement, 4))
	v := seedVolume(t, ctx, db, s)
	pool := s.Pool()

	const limit = 50
	deep := messageAtDepth(t, ctx, pool, v.hotConv, 10000)
	top := messageAtDepth(t, ctx, pool, v.hotConv, 0)
	first := messageAtDepth(t, ctx, pool, v.hotConv, 20000)

	for _, generic := range []bool{false, true} {
		name := "custom"
		if generic {
			name = "generic"
		}
		t.Run("history/"+name, func(t *testing.T) {
			historyPlan := func(t *testing.T, p plan, bounded bool) planNode {
				t.Helper()
				mustNot(t, p, "a sequential or bitmap scan", nodeType("Seq Scan", "Bitmap Heap Scan", "Bitmap Index Scan"))
				mustNot(t, p, "a sort", nodeType("Sort", "Incremental Sort"))
				scans := p.nodes(func(n planNode) bool { return n.Relation == "messages" })
				if len(scans) != 1 || scans[0].NodeType != "Index Scan" || scans[0].Index != "messages_history" {
					t.Fatalf("messages must be read by one Index Scan on messages_history:\n%s", p)
				}
				sc := scans[0]
				if bounded && !strings.Contains(sc.IndexCond, "ROW(") {
					t.Fatalf("the (created_at, id) row-value bound is not an index condition (%q):\n%s", sc.IndexCond, p)
				}
				if sc.Filter != "" {
					t.Fatalf("messages_history scan has a filter %q:\n%s", sc.Filter, p)
				}
				if sc.ActualRows*max(sc.ActualLoops, 1) > limit+1 {
					t.Fatalf("history scan returned %v rows for a page of %d:\n%s", sc.ActualRows, limit, p)
				}
				return sc
			}
			firstPage := explain(t, ctx, pool, generic, historyNewestSQL, v.hotConv, v.hotConvMember, limit+1)
			historyPlan(t, firstPage, false)
			deepPage := explain(t, ctx, pool, generic, historyBeforeSQL, v.hotConv, v.hotConvMember, limit+1, deep.CreatedAt, deep.ID)
			if sc := historyPlan(t, deepPage, true); sc.Direction != "Backward" {
				t.Fatalf("before-page scan direction %q, want Backward:\n%s", sc.Direction, deepPage)
			}
			afterPage := explain(t, ctx, pool, generic, historyAfterSQL, v.hotConv, v.hotConvMember, limit+1, deep.CreatedAt, deep.ID)
			if sc := historyPlan(t, afterPage, true); sc.Direction != "Forward" {
				t.Fatalf("after-page scan direction %q, want Forward:\n%s", sc.Direction, afterPage)
			}
			oldest := explain(t, ctx, pool, generic, historyAfterSQL, v.hotConv, v.hotConvMember, limit+1, first.CreatedAt, first.ID)
			historyPlan(t, oldest, true)
			_ = top
			// Buffers do not grow with depth: 10 000 back costs what the
			// first page costs (a B-tree descent and one heap page per row,
			// give or take a leaf page).
			t.Logf("shared buffers: first page %d, 10k deep (before) %d, 10k deep (after) %d, oldest %d",
				firstPage.buffers(), deepPage.buffers(), afterPage.buffers(), oldest.buffers())
			for _, p := range []plan{deepPage, afterPage, oldest} {
				if p.buffers() > firstPage.buffers()+10 {
					t.Fatalf("a deep page touched %d buffers, the first page %d:\n%s", p.buffers(), firstPage.buffers(), p)
				}
			}
			// Control: the same page by OFFSET reads everything it skips,
			// which is what the checks above exist to catch.
			offset := explain(t, ctx, pool, generic, `
				SELECT id, sender_id, body, created_at FROM messages WHERE conversation_id = $1
				ORDER BY created_at DESC, id DESC OFFSET $2 LIMIT $3`, v.hotConv, 10000, limit+1)
			if offset.buffers() < 10*deepPage.buffers() {
				t.Fatalf("OFFSET 10000 touched %d buffers, keyset %d: the depth check cannot tell them apart", offset.buffers(), deepPage.buffers())
			}
			t.Logf("control: OFFSET 10000 touched %d shared buffers", offset.buffers())
		})

		t.Run("unread/"+name, func(t *testing.T) {
			p := explain(t, ctx, pool, generic, unreadSQL, v.hotUser)
			mustNot(t, p, "a sequential scan", nodeType("Seq Scan"))
			mustNot(t, p, "a read of messages", onRelation("messages"))
			mustReadMembershipsByUser(t, p)
			// Bounded by the user's memberships (an index descent plus a
			// primary-key probe of each conversation), not by table sizes.
			if limit := int64(v.hotUserConvs)*4 + 50; p.buffers() > limit {
				t.Fatalf("unread touched %d buffers for %d memberships (limit %d):\n%s", p.buffers(), v.hotUserConvs, limit, p)
			}
			t.Logf("unread for %d memberships: %d shared buffers", v.hotUserConvs, p.buffers())
		})

		t.Run("conversation_list/"+name, func(t *testing.T) {
			const page = 30
			p := explain(t, ctx, pool, generic, conversationListSQL, v.hotUser, infinity, int64(0), page+1)
			mustNot(t, p, "a sequential scan", nodeType("Seq Scan"))
			mustReadMembershipsByUser(t, p)
			// Messages: only the last message of each conversation on the
			// page, by primary key.
			for _, n := range p.nodes(onRelation("messages")) {
				if n.Index != "messages_pkey" || n.ActualRows*n.ActualLoops > page+1 || n.ActualLoops > page+1 {
					t.Fatalf("messages read other than the page's last messages by primary key (%s %s, %v rows × %v loops):\n%s",
						n.NodeType, n.Index, n.ActualRows, n.ActualLoops, p)
				}
			}
			// Member lists only for the page.
			for _, n := range p.nodes(func(n planNode) bool { return n.Index == "conversation_members_pkey" }) {
				if n.ActualLoops > page+1 {
					t.Fatalf("member lists built for %v conversations, the page has %d:\n%s", n.ActualLoops, page, p)
				}
			}
			if limit := int64(v.hotUserConvs)*4 + page*8 + 50; p.buffers() > limit {
				t.Fatalf("list touched %d buffers for %d memberships (limit %d):\n%s", p.buffers(), v.hotUserConvs, limit, p)
			}
			t.Logf("conversation list page of %d over %d memberships: %d shared buffers", page, v.hotUserConvs, p.buffers())
		})
	}

	// The store's answers on this data agree with the plans' intent.
	t.Run("answers", func(t *testing.T) {
		pg, err := s.Messages(ctx, pool, v.hotConvMember, v.hotConv, chat.PageRequest{Direction: chat.Before, Cursor: deep.Cursor(), Limit: limit})
		if err != nil || len(pg.Messages) != limit || !pg.HasMore {
			t.Fatalf("deep page: %d messages, has_more %v, %v", len(pg.Messages), pg.HasMore, err)
		}
		if want := messageAtDepth(t, ctx, pool, v.hotConv, 10001); pg.Messages[0].ID != want.ID {
			t.Fatalf("deep page starts at %d, want %d", pg.Messages[0].ID, want.ID)
		}
		// The O(1) counter equals the exact count for every membership of user 1.
		var wrong int
		if err := pool.QueryRow(ctx, `
			SELECT count(*) FROM conversation_members cm JOIN conversations c ON c.id = cm.conversation_id
			WHERE cm.user_id = $1 AND c.last_seq - cm.last_read_seq <> (
				SELECT count(*) FROM messages m WHERE m.conversation_id = cm.conversation_id AND m.seq > cm.last_read_seq)`,
			v.hotUser).Scan(&wrong); err != nil || wrong != 0 {
			t.Fatalf("%d memberships where the counter differs from the count (%v)", wrong, err)
		}
	})
}
