package chat

import (
	"context"

	"github.com/parley-chat/parley/internal/wal"
)

// Service is what the HTTP API needs: every /v1 operation, one method each.
// internal/chatsvc implements it (rollout decision, cache, replica routing,
// read-your-writes, invalidation after commit); the HTTP edge decodes a
// request, calls one method and encodes what it returns.
//
// Errors are *Error with a code for conditions the caller can act on
// (EUNAVAILABLE when the database cannot serve now); anything else is an
// internal error whose details must not reach the client.
type Service interface {
	// Authenticate returns the user of a bearer token (EUNAUTHENTICATED when
	// unknown) and where it was looked up. Strong skips remembered tokens.
	Authenticate(ctx context.Context, token string, opts ReadOptions) (User, Source, error)
	// CheckMember is nil when u is a member of conversation convID, ENOTFOUND
	// when not (or when it does not exist).
	CheckMember(ctx context.Context, u User, convID int64) error

	CreateUser(ctx context.Context, handle, displayName string) (Ack[NewUser], error)
	CreateConversation(ctx context.Context, u User, title string, memberIDs []int64) (Ack[Conversation], error)
	Send(ctx context.Context, u User, req SendRequest) (Ack[SendResult], error)
	MarkRead(ctx context.Context, u User, convID, messageID int64) (Ack[int64], error)

	// The reads return the response body as the API sends it (see Read).
	History(ctx context.Context, u User, req HistoryRequest, opts ReadOptions) (Read, error)
	Conversations(ctx context.Context, u User, req ListRequest, opts ReadOptions) (Read, error)
	Conversation(ctx context.Context, u User, convID int64, opts ReadOptions) (Read, error)
	Unread(ctx context.Context, u User, opts ReadOptions) (Read, error)
}

// Admin is what the admin endpoints need: this instance's view of the data
// layer and the per-endpoint rollout switches.
type Admin interface {
	Status(ctx context.Context) Status
	Rollouts(ctx context.Context) ([]Rollout, error)
	// SetRollout changes any subset of an endpoint's switch: ENOTFOUND for an
	// endpoint without one, EINVALID for a value out of range.
	SetRollout(ctx context.Context, endpoint string, u RolloutUpdate) (Rollout, error)
}

// ReadOptions are a read's consistency options (api.md "Read consistency").
type ReadOptions struct {
	// Strong: the primary serves the read, bypassing every cache
	// (X-Consistency: strong).
	Strong bool
	// Token: the read must reflect at least this write (X-Consistency-Token;
	// 0 when none).
	Token wal.LSN
}

// Source says where a read was served from (X-Read-Source).
type Source string

// The sources.
const (
	SourcePrimary Source = "primary"
	SourceReplica Source = "replica"
	SourceCache   Source = "cache"
)

// Cohorts label the HTTP metrics (cohort="baseline|optimized"): the users on
// an endpoint's optimized path and the others.
const (
	CohortBaseline  = "baseline"
	CohortOptimized = "optimized"
)

// Read is a read's answer. Source and Cohort are set also when the read
// fails (they label the response and its metrics).
type Read struct {
	// Body is the JSON response body, as the API sends it. It may be shared
	// with the cache and other requests: never modify it.
	Body   []byte
	Source Source
	Cohort string // CohortBaseline or CohortOptimized
	// Buf, when not nil, is the pooled buffer that Body is in (a body made
	// for this request alone). Release hands it back once Body is written.
	Buf *BodyBuffer
}

// Release returns r's pooled body buffer, if it has one, for reuse: call it
// once Body has been written (or will not be), and use Body no more.
func (r Read) Release() { r.Buf.Release() }

// Ack is an acknowledged write: its value and its consistency token (the
// X-Consistency-Token of the answer; 0 when the write's position is unknown).
type Ack[T any] struct {
	Value T
	Token wal.LSN
}

// NewUser is a created user and its bearer token (shown once).
type NewUser struct {
	User  User
	Token string
}

// HistoryRequest asks for one page of a conversation's history.
type HistoryRequest struct {
	ConversationID int64
	// Direction Newest (no cursor), Before or After Cursor.
	Direction Direction
	// Cursor is the before/after cursor as the client sent it.
	Cursor string
	Limit  int
}

// ListRequest asks for one page of the caller's conversation list.
type ListRequest struct {
	// Direction Newest (the first page, no cursor) or Before Cursor.
	Direction Direction
	// Cursor is the cursor as the client sent it.
	Cursor string
	Limit  int
}

// Status is GET /admin/status: what one instance sees now. The parts come
// from the data layer as JSON-ready values.
type Status struct {
	Replicas any                `json:"replicas"`
	Cache    CacheStatus        `json:"cache"`
	Pools    any                `json:"pools"`
	Rollouts map[string]Rollout `json:"rollouts"`
	Monitors any                `json:"monitors"`
}

// CacheStatus is the cache's state: "up" or "down" (no Redis configured:
// down).
type CacheStatus struct {
	State string `json:"state"`
}

type requestIDKey struct{}

// WithRequestID returns ctx carrying the id of the request it serves (the
// X-Request-Id of the answer), for the log lines of the layers below the
// HTTP edge. It is the only value Parley carries in a context besides
// deadlines and tracing labels.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// RequestID is the request id ctx carries ("" when none).
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}
