package chaos

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// row is a message as the primary holds it after the run.
type row struct {
	ID       string
	Conv     string
	Sender   string
	Key      string
	At       time.Time
	Seq      int64
	KeyCount int // rows with this (sender, key)
}

// finalRows reads every message of convs from the primary (url: a direct
// connection).
func finalRows(ctx context.Context, url string, convs []string) ([]row, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("judge: connect to the primary: %w", err)
	}
	defer conn.Close(context.Background())
	ids := make([]int64, 0, len(convs))
	for _, c := range convs {
		id, err := strconv.ParseInt(c, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("judge: conversation id %q: %w", c, err)
		}
		ids = append(ids, id)
	}
	rows, err := conn.Query(ctx, `
		SELECT id, conversation_id, sender_id, coalesce(idempotency_key, ''), created_at, seq,
		       count(*) OVER (PARTITION BY sender_id, idempotency_key)
		FROM messages WHERE conversation_id = ANY($1)`, ids)
	if err != nil {
		return nil, fmt.Errorf("judge: read the messages: %w", err)
	}
	var out []row
	for rows.Next() {
		var r row
		var id, conv, sender int64
		if err := rows.Scan(&id, &conv, &sender, &r.Key, &r.At, &r.Seq, &r.KeyCount); err != nil {
			return nil, fmt.Errorf("judge: %w", err)
		}
		r.ID, r.Conv, r.Sender = strconv.FormatInt(id, 10), strconv.FormatInt(conv, 10), strconv.FormatInt(sender, 10)
		out = append(out, r)
	}
	return out, rows.Err()
}

// verdict is what the judge found: the set checker's counts and the
// consistency checks of the reads.
type verdict struct {
	Attempted, Acked, Lost, Duplicated, Unexpected, Recovered, InDoubt, Failed int
	OrderViolations                                                            int
	RYWChecks, RYWViolations                                                   int
	StaleReads                                                                 int
	StaleBySource                                                              map[string]int
	AbortedSends, AbortedCommitted, AbortChecks, AbortViolations               int
	Examples                                                                   []string
}

func (v *verdict) example(format string, args ...any) {
	if len(v.Examples) < 12 {
		v.Examples = append(v.Examples, fmt.Sprintf(format, args...))
	}
}

// judge checks the recorded sends and reads against the final rows.
func judge(w *world, rec *recorder, rows []row) verdict {
	v := verdict{StaleBySource: map[string]int{}}
	byKey := map[string]row{}
	for _, r := range rows {
		if r.Key == "" {
			v.Unexpected++
			v.example("unexpected row %s without an idempotency key in conversation %s", r.ID, r.Conv)
			continue
		}
		if r.KeyCount > 1 {
			v.Duplicated++
			v.example("key %s has %d rows", r.Key, r.KeyCount)
		}
		byKey[r.Key] = r
	}
	for _, r := range byKey {
		if _, ok := rec.sends[r.Key]; !ok {
			v.Unexpected++
			v.example("row %s has key %s, which no client sent", r.ID, r.Key)
		}
	}
	// The set: acknowledged sends present (lost), present ones acknowledged
	// or at least attempted (recovered: in doubt at the client, committed).
	acked := map[string][]*send{} // per conversation, for the order check
	for _, s := range rec.sends {
		v.Attempted++
		r, present := byKey[s.Key]
		switch {
		case s.Acked:
			v.Acked++
			if !present {
				v.Lost++
				v.example("send %s acknowledged (message %s) but not on the primary", s.Key, s.MsgID)
				continue
			}
			if r.ID != s.MsgID {
				v.Duplicated++
				v.example("send %s acknowledged as message %s, stored as %s", s.Key, s.MsgID, r.ID)
			}
			acked[s.Conv] = append(acked[s.Conv], s)
		case present:
			v.Recovered++
		case s.Failed != "":
			v.Failed++
			v.example("send %s failed for good: %s", s.Key, s.Failed)
		default:
			v.InDoubt++
		}
		if s.Aborted {
			v.AbortedSends++
			if present && r.At.Before(s.AbortReadAt) {
				v.AbortedCommitted++
			}
		}
	}
	// Order: a send acknowledged before another began is stored before it.
	for conv, ss := range acked {
		sort.Slice(ss, func(i, j int) bool { return ss[i].AckedAt.Before(ss[j].AckedAt) })
		for _, b := range ss {
			for _, a := range ss {
				if !a.AckedAt.Before(b.FirstStart) {
					break
				}
				if byKey[a.Key].Seq >= byKey[b.Key].Seq {
					v.OrderViolations++
					v.example("conversation %s: %s acknowledged before %s began, stored after it (seq %d ≥ %d)", conv, a.Key, b.Key, byKey[a.Key].Seq, byKey[b.Key].Seq)
				}
			}
		}
	}
	// The newest acknowledged message per conversation over time, for the
	// staleness of reads served by the cache or the primary.
	type ackAt struct{ at, msg time.Time }
	convAcks := map[string][]ackAt{}
	for conv, ss := range acked {
		for _, s := range ss { // sorted by acknowledgement
			convAcks[conv] = append(convAcks[conv], ackAt{s.AckedAt, s.MsgAt})
		}
	}
	newestAckedBefore := func(conv string, t time.Time) time.Time {
		var newest time.Time
		for _, a := range convAcks[conv] {
			if !a.at.Before(t) {
				break
			}
			if a.msg.After(newest) {
				newest = a.msg
			}
		}
		return newest
	}
	solo := map[string]*writer{}
	for _, wr := range w.writers {
		solo[wr.soloID] = wr
	}
	for _, o := range rec.ops {
		if o.Class != "ok" {
			continue
		}
		if o.Check != "" {
			s := rec.sends[o.Check]
			v.RYWChecks++
			if bad := rywViolation(o, s, byKey, rows, solo); bad != "" {
				v.RYWViolations++
				v.example("client %d's next read after send %s (acknowledged by instance %d) on instance %d, %s from %s: %s",
					o.Client, s.Key, s.AckInst, o.Inst, o.Kind, o.Source, bad)
			}
		}
		if o.AbortCheck != "" {
			// Committed by the attempt the client hung up on — not by its
			// retry, which comes after these reads: stored before the read
			// began, with 500 ms for the commit and its acknowledgement.
			if r, committed := byKey[o.AbortCheck]; committed && r.At.Add(500*time.Millisecond).Before(o.Start) {
				v.AbortChecks++
				if !o.HasMsg {
					v.AbortViolations++
					v.example("client %d hung up on send %s, which committed; its history read on instance %d (from %s) did not show it",
						o.Client, o.AbortCheck, o.Inst, o.Source)
				}
			}
		}
		if o.Source != "cache" && o.Source != "primary" {
			continue
		}
		for conv, seen := range o.Newest {
			if want := newestAckedBefore(conv, o.Start); want.After(seen) {
				v.StaleReads++
				v.StaleBySource[o.Source]++
				v.example("%s read of conversation %s on instance %d from %s showed its newest message at %s; one acknowledged before the read began is at %s",
					o.Kind, conv, o.Inst, o.Source, seen.Format(time.RFC3339Nano), want.Format(time.RFC3339Nano))
			}
		}
	}
	return v
}

// rywViolation says how read o (the writer's next read after send s was
// acknowledged) fails to reflect s, or "".
func rywViolation(o op, s *send, byKey map[string]row, rows []row, solo map[string]*writer) string {
	switch o.Kind {
	case "history":
		if !o.HasMsg {
			return "the history page does not hold the message " + s.MsgID
		}
	case "list", "conversation":
		seen, ok := o.Newest[s.Conv]
		if !ok {
			return "the conversation is missing"
		}
		if seen.Before(s.MsgAt) {
			return fmt.Sprintf("its last message is older (%s) than the send (%s)", seen.Format(time.RFC3339Nano), s.MsgAt.Format(time.RFC3339Nano))
		}
	case "unread":
		wr := solo[s.Conv]
		if wr == nil {
			return ""
		}
		// The send moved the writer's read marker to it: only the partner's
		// messages stored after it may be unread.
		var allowed int64
		for _, r := range rows {
			if r.Conv == s.Conv && r.Sender == wr.partner.ID && r.At.After(s.MsgAt) {
				allowed++
			}
		}
		if got := o.Unread[s.Conv]; got > allowed {
			return fmt.Sprintf("%d unread, at most %d after the send", got, allowed)
		}
	}
	return ""
}
