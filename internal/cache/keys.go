package cache

import "strconv"

// Kinds of cached values (the middle part of a data key).
const (
	KindHistory       = "hist"   // a message-history page of a conversation
	KindConversations = "convs"  // a page of a user's conversation list
	KindUnread        = "unread" // a user's unread counts
)

type scope uint8

const (
	scopeConversation scope = iota + 1
	scopeUser
)

// Key names a cached value: its owner (a conversation or a user, whose
// generation it lives under), a kind and the request parameters (limit,
// cursors) that select the value. Build it with ConversationKey or UserKey.
type Key struct {
	scope  scope
	id     int64
	kind   string
	params string
}

// ConversationKey names a value invalidated by writes to the conversation,
// e.g. ConversationKey(123, KindHistory, "before=C:limit=50").
func ConversationKey(convID int64, kind, params string) Key {
	return Key{scope: scopeConversation, id: convID, kind: kind, params: params}
}

// UserKey names a value invalidated by InvalidateUser(userID) and by writes
// to any conversation the user is a member of, e.g.
// UserKey(7, KindConversations, "cursor=:limit=30").
func UserKey(userID int64, kind, params string) Key {
	return Key{scope: scopeUser, id: userID, kind: kind, params: params}
}

// tag returns the owner's hash tag, "{conv:123}" or "{user:7}".
func (k Key) tag() string { return ownerTag(k.scope, k.id) }

func ownerTag(s scope, id int64) string {
	b := make([]byte, 0, 32)
	if s == scopeConversation {
		b = append(b, "{conv:"...)
	} else {
		b = append(b, "{user:"...)
	}
	b = strconv.AppendInt(b, id, 10)
	return string(append(b, '}'))
}

// keyspace builds key names under one prefix.
type keyspace struct{ prefix string }

// gen is the owner's generation record.
func (ks keyspace) gen(s scope, id int64) string { return ks.prefix + ownerTag(s, id) + ":gen" }

// dataParts returns a data key split around its generation:
// head + generation + tail = "{conv:123}:hist:g<gen>:<params>". (GetOrFill
// inlines it to build the owner's tag once.)
func (ks keyspace) dataParts(k Key) (head, tail string) {
	return ks.prefix + k.tag() + ":" + k.kind + ":g", ":" + k.params
}

// epoch is the cache epoch's key (a slot of its own in a cluster: no
// script reads it together with an owner's keys).
func (ks keyspace) epoch() string { return ks.prefix + "{epoch}" }

func leaseKey(dataKey string) string { return dataKey + ":lease" }
