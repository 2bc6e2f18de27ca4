// Package chatsvc implements chat.Service and chat.Admin: it decides, for
// every request, where data comes from and what a write must do before it is
// acknowledged. It is the only package that knows the rollout switches, the
// cache, the router and the store together; the HTTP edge (internal/httpapi)
// decodes a request, calls one method here and encodes the result.
//
// # The read path
//
// History, Conversations, Conversation and Unread run one readSpec each
// through read:
//
//  1. rollout.Decide(endpoint, user): the baseline path (primary, no cache)
//     or the optimized one, with the cache and/or replicas as the endpoint's
//     rollout says; the cohort labels the request's metrics (chat.Read);
//  2. ReadOptions.Strong (X-Consistency: strong) → the primary, no cache;
//  3. with the cache on: cache.GetOrFill; a hit answers with the stored body
//     (source "cache"). A fill obeys the cache's rule (never store what a
//     replica behind the owner's last write read): it reads with
//     read-your-writes at the owner's write position (cache.Fill.MinLSN),
//     the primary when that is unknown;
//  4. the database read itself (route): dbrouter.Read with an explicit
//     Route — a replica only if the rollout allows it and one has replayed
//     max(ReadOptions.Token, the user's stored token, the fill's floor); else
//     the primary. The router retries a replica that fails with a connection
//     error on the primary. The store method runs on the connection the
//     router hands it (postgres.Querier).
//
// A history page is the same for every member of its conversation: it is
// cached once per conversation with the member list in front (members.go),
// and every use checks the caller against that list, so a non-member never
// gets it from the cache (the database decides, and answers 404).
//
// The user's read-your-writes token (userToken) is the commit position of
// their last write, kept in Redis for every instance to see (cache's
// SetUserToken/UserToken). When the cache cannot say — Redis unreachable,
// timed out, breaker open, or a user record Redis lost whose floor could not
// be read — the user may have written through another instance and any
// replica may be behind it: the read goes to the primary
// (dbrouter.PositionUnknown, counted with reason token_unknown). An
// X-Consistency-Token the client sends is honoured as well, but cannot stand
// for the user's other writes.
//
// # The write path
//
// CreateUser, CreateConversation, Send and MarkRead run one store method
// (one transaction or one statement on the primary), which returns the
// commit position read on the write's own connection. acknowledge then runs
// detached from the caller (the write is committed: it finishes even if the
// client has gone), within ackTimeout: it normalises the position into a
// token (the primary's CommitLSN when it could not be read; wal.Unknown,
// which keeps the user on the primary until the token expires, when neither
// works), raises the writer's token, and invalidates what the write changed —
// whatever the rollout says, so a later step of the rollout finds nothing
// stale: a send or a new conversation invalidates the conversation and every
// member's list and counts, a mark-read the reader's. The token is returned
// with the result (chat.Ack) and becomes X-Consistency-Token. When Redis did
// not get the token or an invalidation, acknowledge waits (cache.AwaitDelivery)
// until it has, or until Redis has been gone long enough that every
// instance ignores what it held (the cache epoch lapsed): at most about a
// second, at the start of an outage.
//
// # Authentication
//
// A bearer token's user is remembered per instance for a minute (authCache),
// so a request otherwise served by the cache costs the database nothing; the
// lookup itself reads the primary (a user created a moment ago may not have
// been replayed yet).
//
// # Errors
//
// Store and router errors that mean the database cannot serve now (see
// postgres.ErrUnavailable), or the request's own deadline, become
// chat.EUNAVAILABLE here (DomainError); domain errors pass through; anything
// else stays an internal error for the edge to log and hide.
package chatsvc
