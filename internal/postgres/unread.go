package postgres

import (
	"context"
	"fmt"

	"github.com/parley-chat/parley/internal/chat"
)

// Unread returns userID's conversations with unread messages and their
// counts, by conversation id.
//
// The count is an O(1) counter, exact and uncapped: every message carries
// its conversation's seq (assigned under the send's row lock), the
// conversation keeps last_seq and each membership the seq of its read
// marker, so unread = last_seq - last_read_seq. It never counts the reader's
// own messages, because sending advances the sender's marker to the message
// sent and markers only move forward. Cost: the user's memberships through
// conversation_members_by_user and one conversation primary-key lookup each;
// the messages table is not read at all. (The capped alternative, counting
// at most 100 index entries after the marker per conversation, is measured
// against it in the benchmarks and is slower; see docs/performance.md.)
func (s *Store) Unread(ctx context.Context, q Querier, userID int64) ([]chat.UnreadCount, error) {
	rows, err := q.Query(ctx, unreadSQL, userID)
	if err != nil {
		return nil, fmt.Errorf("unread: %w", err)
	}
	defer rows.Close()
	var out []chat.UnreadCount
	for rows.Next() {
		var u chat.UnreadCount
		if err := rows.Scan(&u.ConversationID, &u.Count); err != nil {
			return nil, fmt.Errorf("unread: %w", err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("unread: %w", err)
	}
	return out, nil
}

const unreadSQL = `
	SELECT c.id, c.last_seq - cm.last_read_seq
	FROM conversation_members cm
	JOIN conversations c ON c.id = cm.conversation_id
	WHERE cm.user_id = $1 AND c.last_seq > cm.last_read_seq
	ORDER BY c.id`
