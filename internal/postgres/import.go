package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/parley-chat/parley/internal/chat"
)

// HistoryImport is past history to bulk-load into a conversation that has
// no messages yet (seeding a demo or a test data set).
type HistoryImport struct {
	ConversationID int64
	// Messages in order, CreatedAt strictly increasing and in the past
	// (ID and ConversationID are ignored; ids are assigned in this order).
	Messages []chat.Message
	// ReadUpTo is, per member, how many of the messages they have read
	// (their read marker's seq); members not named have read none.
	ReadUpTo map[int64]int64
}

// ImportHistory loads the histories of batch in one transaction with COPY,
// then sets each conversation's last message and seq and the members' read
// markers, as if the messages had been sent one by one (a conversation is
// made no younger than its first message). It returns the
// number of messages stored. A conversation that already has messages is
// EINVALID (nothing is written).
func (s *Store) ImportHistory(ctx context.Context, batch []HistoryImport) (int64, error) {
	var convIDs, counts []int64
	var firstAt, lastAt []time.Time
	var mConv, mUser, mSeq []int64
	rows := make([][]any, 0, 1024)
	for _, h := range batch {
		if len(h.Messages) == 0 {
			continue
		}
		for i, m := range h.Messages {
			if i > 0 && !m.CreatedAt.After(h.Messages[i-1].CreatedAt) {
				return 0, chat.Errorf(chat.EINVALID, "conversation %d: imported messages must have increasing times", h.ConversationID)
			}
			if err := chat.ValidateBody(m.Body); err != nil {
				return 0, err
			}
			rows = append(rows, []any{h.ConversationID, m.SenderID, m.CreatedAt, int64(i + 1), m.Body})
		}
		convIDs = append(convIDs, h.ConversationID)
		counts = append(counts, int64(len(h.Messages)))
		firstAt = append(firstAt, h.Messages[0].CreatedAt)
		lastAt = append(lastAt, h.Messages[len(h.Messages)-1].CreatedAt)
		for u, n := range h.ReadUpTo {
			mConv, mUser, mSeq = append(mConv, h.ConversationID), append(mUser, u), append(mSeq, min(n, int64(len(h.Messages))))
		}
	}
	if len(rows) == 0 {
		return 0, nil
	}
	var n int64
	_, err := s.inTx(ctx, func(tx pgx.Tx) error {
		// A bulk load outlasts the role's statement_timeout
		// (0070_session_timeouts.sql): its own bound is the caller's context.
		if _, err := tx.Exec(ctx, `SET LOCAL statement_timeout = 0`); err != nil {
			return fmt.Errorf("statement timeout: %w", err)
		}
		var busy int64
		if err := tx.QueryRow(ctx, `
			SELECT count(*) FILTER (WHERE last_seq > 0) FROM (
				SELECT last_seq FROM conversations WHERE id = ANY($1::bigint[])
				ORDER BY id FOR NO KEY UPDATE) x`, convIDs).Scan(&busy); err != nil {
			return fmt.Errorf("lock conversations: %w", err)
		}
		if busy > 0 {
			return chat.Errorf(chat.EINVALID, "%d of the conversations already have messages", busy)
		}
		var err error
		n, err = tx.CopyFrom(ctx, pgx.Identifier{"messages"},
			[]string{"conversation_id", "sender_id", "created_at", "seq", "body"}, pgx.CopyFromRows(rows))
		if err != nil {
			return fmt.Errorf("copy messages: %w", err)
		}
		if _, err := tx.Exec(ctx, `
			UPDATE conversations c
			SET last_seq = x.n, last_message_at = x.at,
			    last_message_id = (SELECT id FROM messages m WHERE m.conversation_id = x.id AND m.created_at = x.at),
			    created_at = least(c.created_at, x.first_at)
			FROM unnest($1::bigint[], $2::bigint[], $3::timestamptz[], $4::timestamptz[]) AS x(id, n, at, first_at)
			WHERE c.id = x.id`, convIDs, counts, lastAt, firstAt); err != nil {
			return fmt.Errorf("update conversations: %w", err)
		}
		if _, err := tx.Exec(ctx, `
			UPDATE conversation_members cm SET last_read_seq = x.seq
			FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS x(conversation_id, user_id, seq)
			WHERE cm.conversation_id = x.conversation_id AND cm.user_id = x.user_id`, mConv, mUser, mSeq); err != nil {
			return fmt.Errorf("update read markers: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("import history: %w", err)
	}
	return n, nil
}

// Analyze refreshes the planner statistics and the visibility map of the
// tables (VACUUM (ANALYZE)), as autovacuum would after a bulk load. VACUUM
// cannot run in a transaction, so it cannot lift the role's
// statement_timeout (0070_session_timeouts.sql) with SET LOCAL, and a
// session SET would leak to PgBouncer's later clients: a table whose VACUUM
// times out gets its statistics from ANALYZE in a transaction of its own
// instead, and its visibility map from autovacuum.
func (s *Store) Analyze(ctx context.Context) error {
	for _, t := range []string{"users", "conversations", "conversation_members", "messages"} {
		_, err := s.write(ctx, func(q Querier) error {
			_, err := q.Exec(ctx, `VACUUM (ANALYZE) `+t, pgx.QueryExecModeSimpleProtocol)
			return err
		})
		if pgCode(err) != "57014" {
			if err != nil {
				return err
			}
			continue
		}
		if _, err := s.inTx(ctx, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `SET LOCAL statement_timeout = 0; ANALYZE `+t, pgx.QueryExecModeSimpleProtocol)
			return err
		}); err != nil {
			return err
		}
	}
	return nil
}
