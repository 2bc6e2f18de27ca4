package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/wal"
)

// CreateConversation stores a conversation of creatorID and memberIDs (the
// creator is always a member; duplicates are ignored) and returns it with
// the commit position. An unknown member id is EINVALID and nothing is
// written. The returned MemberIDs are the users whose conversation lists
// changed.
func (s *Store) CreateConversation(ctx context.Context, creatorID int64, title string, memberIDs []int64) (chat.Conversation, wal.LSN, error) {
	if err := chat.ValidateTitle(title); err != nil {
		return chat.Conversation{}, 0, err
	}
	members, err := chat.Members(creatorID, memberIDs)
	if err != nil {
		return chat.Conversation{}, 0, err
	}
	c := chat.Conversation{Title: title, MemberIDs: members}
	var missing []int64
	pos, err := s.inTx(ctx, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `
			INSERT INTO conversations (created_by, title) VALUES ($1, $2)
			RETURNING id, created_at`, creatorID, title).Scan(&c.ID, &c.CreatedAt); err != nil {
			if pgCode(err) == "23503" { // the creator vanished
				return chat.Errorf(chat.EUNAUTHENTICATED, "unknown user")
			}
			return fmt.Errorf("insert conversation: %w", err)
		}
		tag, err := tx.Exec(ctx, `
			INSERT INTO conversation_members (conversation_id, user_id)
			SELECT $1, u.id FROM users u WHERE u.id = ANY($2::bigint[])`, c.ID, members)
		if err != nil {
			return fmt.Errorf("insert members: %w", err)
		}
		if tag.RowsAffected() == int64(len(members)) {
			return nil
		}
		if err := tx.QueryRow(ctx, `
			SELECT coalesce(array_agg(x ORDER BY x), '{}') FROM unnest($1::bigint[]) x
			WHERE NOT EXISTS (SELECT 1 FROM users WHERE id = x)`, members).Scan(&missing); err != nil {
			return fmt.Errorf("find unknown members: %w", err)
		}
		return errRollback
	})
	if errors.Is(err, errRollback) {
		return chat.Conversation{}, 0, chat.Errorf(chat.EINVALID, "member_ids: no user has the id(s) %v", missing)
	}
	if err != nil {
		return chat.Conversation{}, 0, fmt.Errorf("create conversation: %w", err)
	}
	c.CreatedAt = c.CreatedAt.UTC()
	return c, pos, nil
}

// errRollback makes inTx roll back without it being a failure of the database.
var errRollback = errors.New("rollback")

// conversationSelect is the projection the conversation reads share: the
// conversation, the reader's unread count, the last message and the members.
const conversationColumns = `
	t.id, t.title, t.created_at, t.unread,
	m.id, m.sender_id, m.body, m.created_at,
	ARRAY(SELECT user_id FROM conversation_members WHERE conversation_id = t.id ORDER BY user_id)`

func scanConversation(row pgx.Row) (chat.Conversation, error) {
	var c chat.Conversation
	var mid, msender *int64
	var mbody *string
	var mat *time.Time
	if err := row.Scan(&c.ID, &c.Title, &c.CreatedAt, &c.UnreadCount, &mid, &msender, &mbody, &mat, &c.MemberIDs); err != nil {
		return c, err
	}
	c.CreatedAt = c.CreatedAt.UTC()
	if mid != nil {
		c.LastMessage = &chat.Message{ID: *mid, ConversationID: c.ID, SenderID: *msender, Body: *mbody, CreatedAt: mat.UTC()}
	}
	return c, nil
}

// Conversation returns conversation convID as member userID sees it. A
// conversation that does not exist and one userID is not a member of are the
// same ENOTFOUND. One statement: the membership row, the conversation by
// primary key, the last message by primary key, the members from the
// membership primary key.
func (s *Store) Conversation(ctx context.Context, q Querier, userID, convID int64) (chat.Conversation, error) {
	c, err := scanConversation(q.QueryRow(ctx, `
		WITH t AS MATERIALIZED (
			SELECT c.id, c.title, c.created_at, c.last_message_id, c.last_seq - cm.last_read_seq AS unread
			FROM conversation_members cm
			JOIN conversations c ON c.id = cm.conversation_id
			WHERE cm.conversation_id = $1 AND cm.user_id = $2)
		SELECT `+conversationColumns+`
		FROM t
		LEFT JOIN messages m ON m.conversation_id = t.id AND m.id = t.last_message_id`, convID, userID))
	if errors.Is(err, pgx.ErrNoRows) {
		return chat.Conversation{}, errConversationNotFound()
	}
	if err != nil {
		return chat.Conversation{}, fmt.Errorf("conversation: %w", err)
	}
	return c, nil
}

// MemberIDs returns the ids of conversation convID's members, ascending
// (none for an unknown conversation). It lets a cache share one history page
// among the members and still answer a non-member 404 on a hit. One range
// scan of the membership primary key.
func (s *Store) MemberIDs(ctx context.Context, q Querier, convID int64) ([]int64, error) {
	var ids []int64
	err := q.QueryRow(ctx, `
		SELECT ARRAY(SELECT user_id FROM conversation_members WHERE conversation_id = $1 ORDER BY user_id)`,
		convID).Scan(&ids)
	if err != nil {
		return nil, fmt.Errorf("conversation members: %w", err)
	}
	return ids, nil
}

func errConversationNotFound() error {
	return chat.Errorf(chat.ENOTFOUND, "conversation not found")
}

// infinity is the bound of a first page: later than every time.
var infinity = pgtype.Timestamptz{InfinityModifier: pgtype.Infinity, Valid: true}

// Conversations returns a page of userID's conversations by last activity
// (last message time, else creation time), newest first. page.Direction is
// Newest or Before (the next page after page.Cursor).
//
// The user's memberships are selected through conversation_members_by_user,
// joined with their conversations by primary key, and the top page.Limit
// (+1) by activity are kept (a top-N sort, no index on last_message_at so
// that sends stay HOT updates); only those are enriched with their last
// message and members. No query touches the messages of conversations off
// the page.
func (s *Store) Conversations(ctx context.Context, q Querier, userID int64, page chat.PageRequest) (chat.ConversationPage, error) {
	if err := chat.ValidateLimit(page.Limit); err != nil {
		return chat.ConversationPage{}, err
	}
	var boundAt any = infinity
	var boundID int64
	switch page.Direction {
	case chat.Newest:
	case chat.Before:
		boundAt, boundID = page.Cursor.Time, page.Cursor.ID
	default:
		return chat.ConversationPage{}, chat.Errorf(chat.EINVALID, "the conversation list pages only towards older activity")
	}
	rows, err := q.Query(ctx, conversationListSQL, userID, boundAt, boundID, page.Limit+1)
	if err != nil {
		return chat.ConversationPage{}, fmt.Errorf("conversation list: %w", err)
	}
	var out chat.ConversationPage
	for rows.Next() {
		c, err := scanConversation(rows)
		if err != nil {
			rows.Close()
			return chat.ConversationPage{}, fmt.Errorf("conversation list: %w", err)
		}
		out.Conversations = append(out.Conversations, c)
	}
	if err := rows.Err(); err != nil {
		return chat.ConversationPage{}, fmt.Errorf("conversation list: %w", err)
	}
	if len(out.Conversations) > page.Limit {
		out.Conversations = out.Conversations[:page.Limit]
		out.HasMore = true
	}
	return out, nil
}

const conversationListSQL = `
	WITH t AS MATERIALIZED (
		SELECT c.id, c.title, c.created_at, c.last_message_id, c.last_seq - cm.last_read_seq AS unread,
		       coalesce(c.last_message_at, c.created_at) AS activity
		FROM conversation_members cm
		JOIN conversations c ON c.id = cm.conversation_id
		WHERE cm.user_id = $1
		  AND (coalesce(c.last_message_at, c.created_at), c.id) < ($2::timestamptz, $3::bigint)
		ORDER BY activity DESC, c.id DESC
		LIMIT $4)
	SELECT ` + conversationColumns + `
	FROM t
	LEFT JOIN messages m ON m.conversation_id = t.id AND m.id = t.last_message_id
	ORDER BY t.activity DESC, t.id DESC`
