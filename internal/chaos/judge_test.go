package chaos

import (
	"strings"
	"testing"
	"time"
)

// TestJudge: the set checker and the read checks on hand-made histories.
func TestJudge(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 5, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	w := &world{writers: []*writer{{idx: 0, user: userJSON{ID: "1"}, partner: userJSON{ID: "2"}, soloID: "10"}}, groupID: "20"}
	// ack builds an acknowledged send of client 0 into conv.
	ack := func(key, conv, msgID string, start, acked int) *send {
		return &send{Key: key, Conv: conv, FirstStart: at(start), Acked: true, AckedAt: at(acked), MsgID: msgID, MsgAt: at(acked - 1)}
	}
	mkRow := func(key, conv, id, sender string, atMs int, seq int64) row {
		return row{ID: id, Conv: conv, Sender: sender, Key: key, At: at(atMs), Seq: seq, KeyCount: 1}
	}
	tests := []struct {
		name  string
		sends []*send
		ops   []op
		rows  []row
		check func(t *testing.T, v verdict)
	}{
		{
			name:  "all present, in order, read back",
			sends: []*send{ack("a", "10", "100", 0, 10), ack("b", "10", "101", 20, 30)},
			rows:  []row{mkRow("a", "10", "100", "1", 9, 1), mkRow("b", "10", "101", "1", 29, 2)},
			ops: []op{{Kind: "history", Class: "ok", Source: "replica", Check: "a", HasMsg: true, Start: at(11), Newest: map[string]time.Time{"10": at(9)}},
				{Kind: "list", Class: "ok", Source: "cache", Check: "b", Start: at(31), Newest: map[string]time.Time{"10": at(29)}}},
			check: func(t *testing.T, v verdict) {
				if v.Acked != 2 || v.Lost+v.Duplicated+v.Unexpected+v.OrderViolations+v.RYWViolations+v.StaleReads != 0 || v.RYWChecks != 2 {
					t.Errorf("want a clean verdict, got %+v", v)
				}
			},
		},
		{
			name:  "an acknowledged send missing is lost; an unacknowledged one present is recovered",
			sends: []*send{ack("a", "10", "100", 0, 10), {Key: "b", Conv: "10", FirstStart: at(20)}},
			rows:  []row{mkRow("b", "10", "101", "1", 25, 1)},
			check: func(t *testing.T, v verdict) {
				if v.Lost != 1 || v.Recovered != 1 || v.InDoubt != 0 {
					t.Errorf("lost %d recovered %d in doubt %d, want 1 1 0", v.Lost, v.Recovered, v.InDoubt)
				}
			},
		},
		{
			name:  "a key with two rows, a row nobody sent, an acknowledgement naming another row",
			sends: []*send{ack("a", "10", "100", 0, 10), ack("b", "10", "999", 20, 30)},
			rows: []row{{ID: "100", Conv: "10", Key: "a", At: at(9), Seq: 1, KeyCount: 2}, mkRow("b", "10", "101", "1", 29, 2),
				mkRow("zzz", "10", "102", "1", 40, 3)},
			check: func(t *testing.T, v verdict) {
				if v.Duplicated != 2 || v.Unexpected != 1 {
					t.Errorf("duplicated %d unexpected %d, want 2 1", v.Duplicated, v.Unexpected)
				}
			},
		},
		{
			name:  "a send acknowledged before another began is stored after it",
			sends: []*send{ack("a", "20", "100", 0, 10), ack("b", "20", "101", 20, 30), ack("c", "20", "102", 5, 40)},
			rows:  []row{mkRow("a", "20", "100", "1", 9, 2), mkRow("b", "20", "101", "1", 29, 1), mkRow("c", "20", "102", "1", 39, 3)},
			check: func(t *testing.T, v verdict) {
				// a before b: broken. c overlapped a (began at 5, before a's
				// acknowledgement): any order.
				if v.OrderViolations != 1 {
					t.Errorf("order violations %d, want 1 (%v)", v.OrderViolations, v.Examples)
				}
			},
		},
		{
			name:  "the writer's next read misses the send",
			sends: []*send{ack("a", "10", "100", 0, 10), ack("b", "10", "101", 20, 30)},
			rows:  []row{mkRow("a", "10", "100", "1", 9, 1), mkRow("b", "10", "101", "1", 29, 2)},
			ops: []op{{Kind: "history", Class: "ok", Source: "replica", Check: "a", HasMsg: false, Start: at(11)},
				{Kind: "conversation", Class: "ok", Source: "replica", Check: "b", Start: at(31), Newest: map[string]time.Time{"10": at(9)}},
				{Kind: "history", Class: "unavailable", Check: "b", Start: at(32)}},
			check: func(t *testing.T, v verdict) {
				if v.RYWViolations != 2 || v.RYWChecks != 2 {
					t.Errorf("RYW %d of %d, want 2 of 2 (a failed read is no check)", v.RYWViolations, v.RYWChecks)
				}
			},
		},
		{
			name: "unread: only the partner's messages stored after the send may be unread",
			sends: []*send{{Key: "p1", Conv: "10", Ping: true, Acked: true, AckedAt: at(5), MsgID: "99", MsgAt: at(4), FirstStart: at(0)},
				ack("a", "10", "100", 6, 10)},
			rows: []row{mkRow("p1", "10", "99", "2", 4, 1), mkRow("a", "10", "100", "1", 9, 2)},
			ops:  []op{{Kind: "unread", Class: "ok", Source: "replica", Check: "a", Start: at(11), Unread: map[string]int64{"10": 1}}},
			check: func(t *testing.T, v verdict) {
				if v.RYWViolations != 1 {
					t.Errorf("RYW violations %d, want 1: the partner's message before the send shows unread", v.RYWViolations)
				}
			},
		},
		{
			name:  "a cached or primary read missing a message acknowledged before it began is stale; a replica's is not",
			sends: []*send{ack("a", "20", "100", 0, 10)},
			rows:  []row{mkRow("a", "20", "100", "1", 9, 1)},
			ops: []op{{Kind: "history", Class: "ok", Source: "cache", Start: at(11), Newest: map[string]time.Time{"20": {}}},
				{Kind: "history", Class: "ok", Source: "primary", Start: at(12), Newest: map[string]time.Time{"20": {}}},
				{Kind: "history", Class: "ok", Source: "replica", Start: at(13), Newest: map[string]time.Time{"20": {}}},
				{Kind: "history", Class: "ok", Source: "cache", Start: at(5), Newest: map[string]time.Time{"20": {}}}},
			check: func(t *testing.T, v verdict) {
				if v.StaleReads != 2 || v.StaleBySource["cache"] != 1 || v.StaleBySource["primary"] != 1 {
					t.Errorf("stale %d %v, want 2: one from the cache, one from the primary", v.StaleReads, v.StaleBySource)
				}
			},
		},
		{
			name: "a send hung up on that committed must show in the reads after it; one its retry made need not",
			sends: []*send{{Key: "x", Conv: "10", FirstStart: at(0), Aborted: true, AbortReadAt: at(2000), Acked: true, AckedAt: at(2100), MsgID: "100", MsgAt: at(2050)},
				{Key: "y", Conv: "10", FirstStart: at(0), Aborted: true, AbortReadAt: at(2000), Acked: true, AckedAt: at(2200), MsgID: "101", MsgAt: at(2150)}},
			rows: []row{mkRow("x", "10", "100", "1", 10, 1), mkRow("y", "10", "101", "1", 2150, 2)},
			ops: []op{{Kind: "history", Class: "ok", Source: "cache", AbortCheck: "x", HasMsg: false, Start: at(2000)},
				{Kind: "history", Class: "ok", Source: "cache", AbortCheck: "y", HasMsg: false, Start: at(2000)}},
			check: func(t *testing.T, v verdict) {
				if v.AbortChecks != 1 || v.AbortViolations != 1 || v.AbortedCommitted != 1 {
					t.Errorf("abort checks %d violations %d committed %d, want 1 1 1", v.AbortChecks, v.AbortViolations, v.AbortedCommitted)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{sends: map[string]*send{}, ops: tc.ops}
			for _, s := range tc.sends {
				rec.sends[s.Key] = s
			}
			tc.check(t, judge(w, rec, tc.rows))
		})
	}
}

// TestPhaseStats: requests are counted in the phase they began in, hang-ups
// on purpose and the drain's retries are left out, percentiles are nearest
// rank.
func TestPhaseStats(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 5, 0, 0, 0, time.UTC)
	fault, heal, end := t0.Add(10*time.Second), t0.Add(20*time.Second), t0.Add(30*time.Second)
	var ops []op
	for i := 1; i <= 100; i++ { // before: 1..100 ms
		s := t0.Add(time.Duration(i) * 10 * time.Millisecond)
		ops = append(ops, op{Kind: "history", Class: "ok", Source: "cache", Start: s, End: s.Add(time.Duration(i) * time.Millisecond)})
	}
	ops = append(ops,
		op{Kind: "send", Class: "unavailable", Start: fault, End: fault.Add(time.Second)},
		op{Kind: "send", Class: "aborted", Start: fault, End: fault.Add(5 * time.Second)},
		op{Kind: "send", Class: "timeout", Start: heal, End: heal.Add(5 * time.Second), Drain: true},
		op{Kind: "list", Class: "ok", Source: "primary", Start: heal, End: heal.Add(2 * time.Millisecond)})
	st := phaseStats(ops, fault, heal, end)
	b, f, a := st["before"], st["fault"], st["after"]
	if b.Requests != 100 || b.P50ms != 50 || b.P95ms != 95 || b.P99ms != 99 || b.Sources["cache"] != 100 || b.Errors != 0 {
		t.Errorf("before: %+v", b)
	}
	if f.Requests != 1 || f.Errors != 1 || f.ByClass["unavailable"] != 1 || f.Seconds != 10 {
		t.Errorf("fault: %+v", f)
	}
	if a.Requests != 1 || a.Errors != 0 || a.Sources["primary"] != 1 {
		t.Errorf("after: %+v", a)
	}
}

// TestLatencyTarget: absolute while the machine allows it, relative (and
// saying so) when the before phase is already over the bound.
func TestLatencyTarget(t *testing.T) {
	for _, tc := range []struct {
		before, fault float64
		pass          bool
		relative      bool
	}{
		{5, 15, true, false},
		{5, 25, false, false},
		{40, 55, true, true},
		{40, 70, false, true},
	} {
		tg := latencyTarget("x", 20, &PhaseStats{P95ms: tc.before}, &PhaseStats{P95ms: tc.fault}, 9)
		if tg.Passed != tc.pass || strings.Contains(tg.Want, "relative") != tc.relative {
			t.Errorf("before %v fault %v: %+v", tc.before, tc.fault, tg)
		}
	}
}

// The correctness gate (make test's) follows the correctness targets only,
// and a scenario that could not run fails it.
func TestPassedCorrectness(t *testing.T) {
	for _, tt := range []struct {
		name string
		r    Result
		want bool
	}{
		{"all met", Result{Targets: []Target{{Passed: true, Correctness: true}, {Passed: true}}}, true},
		{"a latency target missed", Result{Targets: []Target{{Passed: true, Correctness: true}, {Passed: false}}}, true},
		{"a write lost", Result{Targets: []Target{{Passed: false, Correctness: true}, {Passed: true}}}, false},
		{"could not run", Result{Error: "stack down"}, false},
	} {
		if got := tt.r.PassedCorrectness(); got != tt.want {
			t.Errorf("%s: PassedCorrectness = %v, want %v", tt.name, got, tt.want)
		}
	}
}
