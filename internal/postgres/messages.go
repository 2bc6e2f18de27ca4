package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/wal"
)

// SendMessage stores a message in one transaction:
//
//  1. lock the conversation row (FOR NO KEY UPDATE: it serializes the sends
//     of one conversation without blocking the foreign-key checks of other
//     writers) and check that the sender is a member;
//  2. with an idempotency key, look the key up (after the lock, so a retry
//     racing the first attempt sees its committed row): the same conversation
//     and body return the stored message, anything else is ECONFLICT;
//  3. insert with created_at = greatest(clock_timestamp(), last + 1µs) and
//     seq = last_seq + 1 — taken after the lock, so both are in commit order
//     within the conversation and strictly increasing even if the clock steps
//     back — update conversations.last_message_* and last_seq, and advance
//     the sender's read marker, all in one statement. ON CONFLICT DO NOTHING
//     on the key covers a retry racing in another conversation.
//
// The result names the members (whose lists and unread counts changed); the
// position is the commit's, read right after it (0 when it could not be
// read; for a replayed key, a position at or after the first commit's).
// When the COMMIT was sent and not answered the error wraps
// ErrCommitUnknown and the result still names the members.
func (s *Store) SendMessage(ctx context.Context, req chat.SendRequest) (chat.SendResult, wal.LSN, error) {
	if err := chat.ValidateBody(req.Body); err != nil {
		return chat.SendResult{}, 0, err
	}
	var key *string
	if req.IdempotencyKey != "" {
		if err := chat.ValidateIdempotencyKey(req.IdempotencyKey); err != nil {
			return chat.SendResult{}, 0, err
		}
		key = &req.IdempotencyKey
	}
	res := chat.SendResult{Message: chat.Message{ConversationID: req.ConversationID, SenderID: req.SenderID, Body: req.Body}}
	pos, err := s.inTx(ctx, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `
			SELECT ARRAY(SELECT user_id FROM conversation_members WHERE conversation_id = c.id ORDER BY user_id)
			FROM conversations c
			WHERE c.id = $1
			  AND EXISTS (SELECT 1 FROM conversation_members WHERE conversation_id = $1 AND user_id = $2)
			FOR NO KEY UPDATE OF c`, req.ConversationID, req.SenderID).Scan(&res.MemberIDs)
		if errors.Is(err, pgx.ErrNoRows) {
			return errConversationNotFound()
		}
		if err != nil {
			return fmt.Errorf("lock conversation: %w", err)
		}
		if key != nil {
			prev, found, err := messageByKey(ctx, tx, req.SenderID, *key)
			if err != nil {
				return err
			}
			if found {
				res.Message, res.Created = prev, false
				return sameRequest(prev, req)
			}
		}
		err = tx.QueryRow(ctx, `
			WITH c AS (
				SELECT last_seq, last_message_at FROM conversations WHERE id = $1),
			m AS (
				INSERT INTO messages (conversation_id, sender_id, created_at, seq, body, idempotency_key)
				SELECT $1, $2, greatest(clock_timestamp(), c.last_message_at + interval '1 microsecond'), c.last_seq + 1, $3, $4
				FROM c
				ON CONFLICT (sender_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
				RETURNING id, created_at, seq),
			conv AS (
				UPDATE conversations SET last_message_id = m.id, last_message_at = m.created_at, last_seq = m.seq
				FROM m WHERE conversations.id = $1),
			marker AS (
				UPDATE conversation_members SET last_read_seq = m.seq
				FROM m WHERE conversation_id = $1 AND user_id = $2 AND last_read_seq < m.seq)
			SELECT id, created_at FROM m`, req.ConversationID, req.SenderID, req.Body, key).
			Scan(&res.Message.ID, &res.Message.CreatedAt)
		if errors.Is(err, pgx.ErrNoRows) && key != nil {
			// The key was taken between our lookup and the insert, by a send
			// into another conversation (this one is locked).
			prev, found, err := messageByKey(ctx, tx, req.SenderID, *key)
			if err != nil {
				return err
			}
			if !found {
				return fmt.Errorf("insert message: idempotency key conflict, but no row holds the key")
			}
			res.Message, res.Created = prev, false
			return sameRequest(prev, req)
		}
		if err != nil {
			return fmt.Errorf("insert message: %w", err)
		}
		res.Created = true
		return nil
	})
	if errors.Is(err, ErrCommitUnknown) {
		// The members are known (read under the lock): the caller
		// invalidates as if it had committed.
		return chat.SendResult{MemberIDs: res.MemberIDs}, 0, fmt.Errorf("send message: %w", err)
	}
	if err != nil {
		return chat.SendResult{}, 0, fmt.Errorf("send message: %w", err)
	}
	res.Message.CreatedAt = res.Message.CreatedAt.UTC()
	return res, pos, nil
}

func messageByKey(ctx context.Context, q Querier, senderID int64, key string) (chat.Message, bool, error) {
	m := chat.Message{SenderID: senderID}
	err := q.QueryRow(ctx, `
		SELECT id, conversation_id, body, created_at FROM messages
		WHERE sender_id = $1 AND idempotency_key = $2`, senderID, key).Scan(&m.ID, &m.ConversationID, &m.Body, &m.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return m, false, nil
	}
	if err != nil {
		return m, false, fmt.Errorf("message by idempotency key: %w", err)
	}
	m.CreatedAt = m.CreatedAt.UTC()
	return m, true, nil
}

// sameRequest is nil when prev (stored under the request's idempotency key)
// is what req asks for, ECONFLICT otherwise.
func sameRequest(prev chat.Message, req chat.SendRequest) error {
	if prev.ConversationID == req.ConversationID && prev.Body == req.Body {
		return nil
	}
	return chat.Errorf(chat.ECONFLICT, "the Idempotency-Key was already used for a different message")
}

// History queries: one statement each, the membership check included (no
// membership row: no result row, ENOTFOUND; member of an empty range: one
// row of NULLs). The page is the keyset range on the row value
// (created_at, id) over messages_history, read in index order with no sort;
// $3 is the limit + 1 (the extra row says whether more exist).
const (
	historyNewestSQL = `
		SELECT m.id, m.sender_id, m.body, m.created_at
		FROM conversation_members cm
		LEFT JOIN LATERAL (
			SELECT id, sender_id, body, created_at FROM messages
			WHERE conversation_id = $1
			ORDER BY created_at DESC, id DESC
			LIMIT $3) m ON true
		WHERE cm.conversation_id = $1 AND cm.user_id = $2`
	historyBeforeSQL = `
		SELECT m.id, m.sender_id, m.body, m.created_at
		FROM conversation_members cm
		LEFT JOIN LATERAL (
			SELECT id, sender_id, body, created_at FROM messages
			WHERE conversation_id = $1 AND (created_at, id) < ($4::timestamptz, $5::bigint)
			ORDER BY created_at DESC, id DESC
			LIMIT $3) m ON true
		WHERE cm.conversation_id = $1 AND cm.user_id = $2`
	historyAfterSQL = `
		SELECT m.id, m.sender_id, m.body, m.created_at
		FROM conversation_members cm
		LEFT JOIN LATERAL (
			SELECT id, sender_id, body, created_at FROM messages
			WHERE conversation_id = $1 AND (created_at, id) > ($4::timestamptz, $5::bigint)
			ORDER BY created_at, id
			LIMIT $3) m ON true
		WHERE cm.conversation_id = $1 AND cm.user_id = $2`
)

// History statements that also return the conversation's member list (for
// a page cached once for all members): the same page, in the same snapshot,
// with the members (ascending) in a fifth column of the first row only —
// an InitPlan, evaluated once — so the page and its member list cost one
// round trip.
var (
	historyNewestMembersSQL = withMembers(historyNewestSQL)
	historyBeforeMembersSQL = withMembers(historyBeforeSQL)
	historyAfterMembersSQL  = withMembers(historyAfterSQL)
)

// withMembers turns a history statement into its member-list variant.
func withMembers(sql string) string {
	const (
		sel  = "SELECT m.id, m.sender_id, m.body, m.created_at\n"
		lat  = "LEFT JOIN LATERAL (\n"
		tail = ") m ON true"
	)
	i, j, k := strings.Index(sql, sel), strings.Index(sql, lat), strings.Index(sql, tail)
	if i < 0 || j < 0 || k < 0 {
		panic("postgres: unexpected history statement")
	}
	return sql[:i] + "SELECT m.id, m.sender_id, m.body, m.created_at,\n" +
		"\t\t\tCASE WHEN m.id IS NULL OR m.first THEN ARRAY(SELECT user_id FROM conversation_members WHERE conversation_id = $1 ORDER BY user_id) END\n" +
		sql[i+len(sel):j+len(lat)] +
		"\t\t\tSELECT p.*, row_number() OVER () = 1 AS first FROM (" + sql[j+len(lat):k] + ") p" +
		sql[k:]
}

// Messages returns one page of conversation convID's history for member
// userID (api.md: newest first for Newest and Before, oldest first for
// After). A conversation userID is not a member of is ENOTFOUND.
func (s *Store) Messages(ctx context.Context, q Querier, userID, convID int64, page chat.PageRequest) (chat.MessagePage, error) {
	p, _, err := s.messages(ctx, q, userID, convID, page, false)
	return p, err
}

// MessagesAndMembers is Messages and MemberIDs in one statement (one round
// trip, one snapshot): the page for member userID and the ids of the
// conversation's members, ascending.
func (s *Store) MessagesAndMembers(ctx context.Context, q Querier, userID, convID int64, page chat.PageRequest) (chat.MessagePage, []int64, error) {
	return s.messages(ctx, q, userID, convID, page, true)
}

func (s *Store) messages(ctx context.Context, q Querier, userID, convID int64, page chat.PageRequest, members bool) (chat.MessagePage, []int64, error) {
	if err := chat.ValidateLimit(page.Limit); err != nil {
		return chat.MessagePage{}, nil, err
	}
	newest, before, after := historyNewestSQL, historyBeforeSQL, historyAfterSQL
	if members {
		newest, before, after = historyNewestMembersSQL, historyBeforeMembersSQL, historyAfterMembersSQL
	}
	var rows pgx.Rows
	var err error
	switch page.Direction {
	case chat.Newest:
		rows, err = q.Query(ctx, newest, convID, userID, page.Limit+1)
	case chat.Before:
		rows, err = q.Query(ctx, before, convID, userID, page.Limit+1, page.Cursor.Time, page.Cursor.ID)
	case chat.After:
		rows, err = q.Query(ctx, after, convID, userID, page.Limit+1, page.Cursor.Time, page.Cursor.ID)
	default:
		return chat.MessagePage{}, nil, chat.Errorf(chat.EINVALID, "unknown page direction")
	}
	if err != nil {
		return chat.MessagePage{}, nil, fmt.Errorf("history: %w", err)
	}
	var out chat.MessagePage
	var ids []int64
	member := false
	var id, sender *int64
	var body *string
	var at *time.Time
	var memberIDs []int64
	dest := []any{&id, &sender, &body, &at}
	if members {
		dest = append(dest, &memberIDs)
	}
	for rows.Next() {
		member = true
		memberIDs = nil
		if err := rows.Scan(dest...); err != nil {
			rows.Close()
			return chat.MessagePage{}, nil, fmt.Errorf("history: %w", err)
		}
		if memberIDs != nil {
			ids = memberIDs
		}
		if id == nil {
			continue
		}
		out.Messages = append(out.Messages, chat.Message{ID: *id, ConversationID: convID, SenderID: *sender, Body: *body, CreatedAt: at.UTC()})
	}
	if err := rows.Err(); err != nil {
		return chat.MessagePage{}, nil, fmt.Errorf("history: %w", err)
	}
	if !member {
		return chat.MessagePage{}, nil, errConversationNotFound()
	}
	if members && ids == nil {
		return chat.MessagePage{}, nil, fmt.Errorf("history: no member list in the result")
	}
	// The LIMIT chose the rows; present them in the page's order without
	// relying on the join to keep the index order.
	asc := page.Direction == chat.After
	slices.SortFunc(out.Messages, func(a, b chat.Message) int {
		c := a.CreatedAt.Compare(b.CreatedAt)
		if c == 0 {
			c = cmpInt(a.ID, b.ID)
		}
		if !asc {
			c = -c
		}
		return c
	})
	if len(out.Messages) > page.Limit {
		out.Messages = out.Messages[:page.Limit]
		out.HasMore = true
	}
	return out, ids, nil
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// MarkRead moves member userID's read marker in conversation convID forward
// to message messageID (never back) and returns the conversation's unread
// count for userID. A non-member gets ENOTFOUND; a message that is not in
// the conversation is EINVALID. One statement, no explicit transaction.
func (s *Store) MarkRead(ctx context.Context, userID, convID, messageID int64) (int64, wal.LSN, error) {
	var readSeq, lastSeq int64
	var target *int64
	pos, err := s.write(ctx, func(q Querier) error {
		return q.QueryRow(ctx, `
			WITH me AS (
				SELECT cm.last_read_seq, c.last_seq
				FROM conversation_members cm JOIN conversations c ON c.id = cm.conversation_id
				WHERE cm.conversation_id = $1 AND cm.user_id = $2),
			t AS (
				SELECT seq FROM messages WHERE id = $3 AND conversation_id = $1),
			moved AS (
				UPDATE conversation_members cm SET last_read_seq = t.seq
				FROM t
				WHERE cm.conversation_id = $1 AND cm.user_id = $2 AND cm.last_read_seq < t.seq)
			SELECT me.last_read_seq, me.last_seq, (SELECT seq FROM t) FROM me`,
			convID, userID, messageID).Scan(&readSeq, &lastSeq, &target)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, 0, errConversationNotFound()
	}
	if err != nil {
		return 0, 0, fmt.Errorf("mark read: %w", err)
	}
	if target == nil {
		return 0, 0, chat.Errorf(chat.EINVALID, "message_id: no message %d in this conversation", messageID)
	}
	return lastSeq - max(readSeq, *target), pos, nil
}
