package chat

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// The API's JSON form of the domain types (api.md): ids are decimal
// strings, times RFC 3339 in UTC with microseconds, cursors opaque signed
// strings. The service encodes read responses once (a cached value is the
// body itself) and the HTTP edge encodes the results of writes, both with
// these types, so a resource looks the same wherever it comes from.

// UserJSON is a user; Token only in the answer that created it.
type UserJSON struct {
	ID          string `json:"id"`
	Handle      string `json:"handle"`
	DisplayName string `json:"display_name"`
	Token       string `json:"token,omitempty"`
}

// MessageJSON is a message.
type MessageJSON struct {
	ID             string `json:"id"`
	ConversationID string `json:"conversation_id"`
	SenderID       string `json:"sender_id"`
	Body           string `json:"body"`
	CreatedAt      string `json:"created_at"`
	Cursor         string `json:"cursor"`
}

// MessagePageJSON is a page of history.
type MessagePageJSON struct {
	Messages   []MessageJSON `json:"messages"`
	HasMore    bool          `json:"has_more"`
	NextCursor *string       `json:"next_cursor"`
}

// ConversationJSON is a conversation as one member sees it.
type ConversationJSON struct {
	ID            string       `json:"id"`
	Title         string       `json:"title"`
	MemberIDs     []string     `json:"member_ids"`
	CreatedAt     string       `json:"created_at"`
	LastMessageAt *string      `json:"last_message_at"`
	LastMessage   *MessageJSON `json:"last_message"`
	UnreadCount   int64        `json:"unread_count"`
}

// ConversationListJSON is a page of the caller's conversation list.
type ConversationListJSON struct {
	Conversations []ConversationJSON `json:"conversations"`
	NextCursor    *string            `json:"next_cursor"`
}

// UnreadJSON is the caller's unread counts (conversations with any).
type UnreadJSON struct {
	Total         int64                    `json:"total"`
	Conversations []UnreadConversationJSON `json:"conversations"`
}

// UnreadConversationJSON is one conversation's unread count.
type UnreadConversationJSON struct {
	ID          string `json:"id"`
	UnreadCount int64  `json:"unread_count"`
}

// Encoder makes the JSON form of domain values; the cursors it puts in them
// are signed by Cursors (every instance must share its key).
type Encoder struct {
	Cursors *CursorCodec
}

// User is u on the wire (without a token).
func (Encoder) User(u User) UserJSON {
	return UserJSON{ID: FormatID(u.ID), Handle: u.Handle, DisplayName: u.DisplayName}
}

// Message is m on the wire, with a cursor that points at it.
func (e Encoder) Message(m Message) MessageJSON {
	return MessageJSON{
		ID:             FormatID(m.ID),
		ConversationID: FormatID(m.ConversationID),
		SenderID:       FormatID(m.SenderID),
		Body:           m.Body,
		CreatedAt:      FormatTime(m.CreatedAt),
		Cursor:         e.Cursors.Encode(MessageCursor, m.ConversationID, m.Cursor()),
	}
}

// MessagePage is a history page on the wire; given is the cursor the page
// was asked for with (for After). The page is the same for every member
// (cursors are bound to the conversation, not the reader).
//
// next_cursor: for the newest page and Before, the cursor to pass as before
// for the next older page, null when has_more is false. For After, the
// cursor to pass as after next time: the newest message returned, or the
// cursor given when nothing newer exists yet — never null, so a client can
// keep polling with it.
//
// The service writes the page with EncodeMessagePage (the same bytes,
// without reflection); this form is the reference its tests compare with.
func (e Encoder) MessagePage(p MessagePage, dir Direction, given string) MessagePageJSON {
	out := MessagePageJSON{Messages: make([]MessageJSON, len(p.Messages)), HasMore: p.HasMore}
	for i, m := range p.Messages {
		out.Messages[i] = e.Message(m)
	}
	switch {
	case dir == After && len(out.Messages) > 0:
		out.NextCursor = &out.Messages[len(out.Messages)-1].Cursor
	case dir == After:
		out.NextCursor = &given
	case p.HasMore:
		out.NextCursor = &out.Messages[len(out.Messages)-1].Cursor
	}
	return out
}

// Conversation is c on the wire.
func (e Encoder) Conversation(c Conversation) ConversationJSON {
	out := ConversationJSON{
		ID:          FormatID(c.ID),
		Title:       c.Title,
		MemberIDs:   make([]string, len(c.MemberIDs)),
		CreatedAt:   FormatTime(c.CreatedAt),
		UnreadCount: c.UnreadCount,
	}
	for i, id := range c.MemberIDs {
		out.MemberIDs[i] = FormatID(id)
	}
	if c.LastMessage != nil {
		at := FormatTime(c.LastMessage.CreatedAt)
		m := e.Message(*c.LastMessage)
		out.LastMessageAt, out.LastMessage = &at, &m
	}
	return out
}

// ConversationList is a page of userID's conversation list on the wire.
func (e Encoder) ConversationList(userID int64, p ConversationPage) ConversationListJSON {
	out := ConversationListJSON{Conversations: make([]ConversationJSON, len(p.Conversations))}
	for i, c := range p.Conversations {
		out.Conversations[i] = e.Conversation(c)
	}
	if p.HasMore {
		next := e.Cursors.Encode(ConversationListCursor, userID, p.Conversations[len(p.Conversations)-1].ListCursor())
		out.NextCursor = &next
	}
	return out
}

// Unread is the unread counts on the wire: the conversations with any, and
// their total.
func (Encoder) Unread(counts []UnreadCount) UnreadJSON {
	out := UnreadJSON{Conversations: make([]UnreadConversationJSON, 0, len(counts))}
	for _, c := range counts {
		if c.Count <= 0 {
			continue
		}
		out.Total += c.Count
		out.Conversations = append(out.Conversations, UnreadConversationJSON{ID: FormatID(c.ConversationID), UnreadCount: c.Count})
	}
	return out
}

// EncodeJSON is v as a response body: JSON and a newline.
func EncodeJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	if err := json.NewEncoder(&b).Encode(v); err != nil {
		return nil, fmt.Errorf("encode response: %w", err)
	}
	return b.Bytes(), nil
}

// FormatID is an id on the wire: a decimal string.
func FormatID(id int64) string { return strconv.FormatInt(id, 10) }

// ParseID parses a wire id: the canonical decimal form of a positive int64.
func ParseID(s string) (int64, bool) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || strconv.FormatInt(n, 10) != s {
		return 0, false
	}
	return n, true
}

// timeLayout is RFC 3339 with microseconds, for UTC times.
const timeLayout = "2006-01-02T15:04:05.000000Z"

// FormatTime is a time on the wire.
func FormatTime(t time.Time) string { return t.UTC().Format(timeLayout) }
