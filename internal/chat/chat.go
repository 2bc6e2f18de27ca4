// Package chat is Parley's domain: users, conversations, messages, keyset
// cursors, the validation rules of the API contract and coded errors. It does
// no I/O and imports no database or cache driver; the store (internal/postgres)
// and the HTTP edge (internal/httpapi) both speak these types.
package chat

import "time"

// User is an account. Its bearer token is never stored, only its SHA-256.
type User struct {
	ID          int64
	Handle      string
	DisplayName string
	CreatedAt   time.Time
}

// Conversation is a DM or a group, as one member sees it (UnreadCount is
// that member's).
type Conversation struct {
	ID          int64
	Title       string
	MemberIDs   []int64 // ascending
	CreatedAt   time.Time
	LastMessage *Message // nil while the conversation has no message
	UnreadCount int64
}

// ActivityAt is what the conversation list orders by: the last message's
// time, else the creation time.
func (c Conversation) ActivityAt() time.Time {
	if c.LastMessage != nil {
		return c.LastMessage.CreatedAt
	}
	return c.CreatedAt
}

// ListCursor is the conversation's position in its members' conversation lists.
func (c Conversation) ListCursor() Cursor { return Cursor{Time: c.ActivityAt(), ID: c.ID} }

// Message is one message of a conversation.
type Message struct {
	ID             int64
	ConversationID int64
	SenderID       int64
	Body           string
	CreatedAt      time.Time // commit-ordered within the conversation, microseconds
}

// Cursor is the message's keyset position in its conversation's history.
func (m Message) Cursor() Cursor { return Cursor{Time: m.CreatedAt, ID: m.ID} }

// Direction says which page of a keyset-paginated list to read.
type Direction int

const (
	// Newest is the first page: the newest items, newest first.
	Newest Direction = iota
	// Before is the page of items strictly older than the cursor, newest first.
	Before
	// After is the page of items strictly newer than the cursor, oldest first.
	After
)

// PageRequest asks for one page of a keyset-paginated list.
type PageRequest struct {
	Direction Direction
	Cursor    Cursor // ignored for Newest
	Limit     int
}

// MessagePage is one page of a conversation's history. HasMore says that
// further items exist in the page's direction (older for Newest and Before,
// newer for After).
type MessagePage struct {
	Messages []Message
	HasMore  bool
}

// ConversationPage is one page of a user's conversation list, newest
// activity first.
type ConversationPage struct {
	Conversations []Conversation
	HasMore       bool
}

// SendRequest is one message to send.
type SendRequest struct {
	ConversationID int64
	SenderID       int64
	Body           string
	IdempotencyKey string // "" when the client sent none
}

// SendResult is the outcome of a send. Created is false when an earlier
// send with the same idempotency key already stored the message (nothing was
// written, nothing needs invalidating). MemberIDs are the conversation's
// members, whose conversation lists and unread counts the send changed.
type SendResult struct {
	Message   Message
	Created   bool
	MemberIDs []int64
}

// UnreadCount is one conversation's unread messages for one member.
type UnreadCount struct {
	ConversationID int64
	Count          int64
}

// Endpoints name the read paths that routing, caching and rollouts act on,
// here and nowhere else (the metric label endpoint; the rollout API's
// endpoint names are the first three, RolloutEndpoints).
const (
	EndpointMessageHistory   = "message_history"
	EndpointConversationList = "conversation_list"
	EndpointUnreadCount      = "unread_count"
	EndpointConversation     = "conversation"
	EndpointAuth             = "auth"
)
