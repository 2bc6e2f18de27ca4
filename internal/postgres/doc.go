// Package postgres is Parley's PostgreSQL storage: the embedded schema
// migrations and the store that runs the application's SQL. Queries live
// beside the method that runs them and are proven by EXPLAIN tests
// (explain_test.go) and measured by benchmarks (bench_test.go,
// scripts/perf-store.sh).
//
// # Reads and writes
//
// Writes run on the primary pool the Store was made with, each in one
// transaction or one statement, and return what a cache must invalidate:
//
//	CreateUser(ctx, handle, displayName) (chat.User, token, error)
//	CreateConversation(ctx, creatorID, title, memberIDs) (chat.Conversation, error) // MemberIDs: whose lists changed
//	SendMessage(ctx, chat.SendRequest) (chat.SendResult, error)                     // ConversationID, MemberIDs, Created
//	MarkRead(ctx, userID, convID, messageID) (unread int64, error)                  // changes userID's counts only
//
// Reads never open a transaction and take the Querier to run on, so a
// router picks the node and a cache wraps the call:
//
//	UserByToken(ctx, q, token) (chat.User, error)
//	Conversation(ctx, q, userID, convID) (chat.Conversation, error)
//	Conversations(ctx, q, userID, chat.PageRequest) (chat.ConversationPage, error)
//	Messages(ctx, q, userID, convID, chat.PageRequest) (chat.MessagePage, error)
//	Unread(ctx, q, userID) ([]chat.UnreadCount, error)
//	MemberIDs(ctx, q, convID) ([]int64, error)                                      // for caches shared by the members
//
// Store.Read(ctx, endpoint, fn) runs fn on a primary connection and returns
// "primary"; dbrouter.Router.Read has the same shape. Every failure that
// means the database cannot serve (unreachable, broken connection, the pool
// acquire bound) is wrapped in dbrouter.ErrUnavailable by dbrouter.Classify,
// the one classification of database errors; the bound on the wait for a
// pooled connection belongs to the pool (dbrouter's pools have it); domain conditions are
// *chat.Error with their code.
package postgres
