package httpapi

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/stack/stacktest"
	"github.com/parley-chat/parley/internal/wal"
)

// The handler tests run on a fake chat.Service: they check what the HTTP
// edge does (decoding, auth, headers, errors, metrics, logs), not where data
// comes from. The whole service on the real stack is test/integration's.

const adminToken = "adm_test_token"

// fakeService answers with what its fields say and records the calls.
type fakeService struct {
	mu    sync.Mutex
	calls []string // method names, in order

	users map[string]chat.User // bearer token → user
	// authSource is Authenticate's source (default primary).
	authSource chat.Source

	// read answers History, Conversations, Conversation and Unread.
	read    func(method string) (chat.Read, error)
	members map[int64][]int64 // conversation → members, for CheckMember
	// write answers the writes: the error, and the token of their Ack.
	writeErr   error
	writeToken wal.LSN
	replayed   bool // Send says the message existed (Created false)

	// the last requests, for assertions
	lastHistory chat.HistoryRequest
	lastList    chat.ListRequest
	lastOpts    chat.ReadOptions
}

func newFake() *fakeService {
	return &fakeService{
		users: map[string]chat.User{"plt_alice": {ID: 1, Handle: "alice", DisplayName: "Alice"}, "plt_bob": {ID: 2, Handle: "bob", DisplayName: "Bob"},
			"plt_carol": {ID: 3, Handle: "carol", DisplayName: "Carol"}}, // not a member of 10
		members: map[int64][]int64{10: {1, 2}},
		read: func(method string) (chat.Read, error) {
			return chat.Read{Body: []byte(readBodies[method]), Source: chat.SourcePrimary, Cohort: chat.CohortBaseline}, nil
		},
	}
}

// readBodies are answers of the fake's reads, as the API sends them (the
// client checks every answer against api/openapi.yaml).
var readBodies = map[string]string{
	"History":       `{"messages":[],"has_more":false,"next_cursor":null}` + "\n",
	"Conversations": `{"conversations":[],"next_cursor":null}` + "\n",
	"Conversation": `{"id":"10","title":"","member_ids":["1","2"],"created_at":"2026-11-26T03:10:18.123456Z",` +
		`"last_message_at":null,"last_message":null,"unread_count":0}` + "\n",
	"Unread": `{"total":0,"conversations":[]}` + "\n",
}

func (f *fakeService) record(method string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, method)
}

func (f *fakeService) called(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if c == method {
			n++
		}
	}
	return n
}

func (f *fakeService) Authenticate(_ context.Context, token string, opts chat.ReadOptions) (chat.User, chat.Source, error) {
	f.record("Authenticate")
	src := f.authSource
	if src == "" {
		src = chat.SourcePrimary
	}
	u, ok := f.users[token]
	if !ok {
		return chat.User{}, src, chat.Errorf(chat.EUNAUTHENTICATED, "unknown token")
	}
	return u, src, nil
}

func (f *fakeService) CheckMember(_ context.Context, u chat.User, convID int64) error {
	f.record("CheckMember")
	for _, m := range f.members[convID] {
		if m == u.ID {
			return nil
		}
	}
	return chat.Errorf(chat.ENOTFOUND, "conversation not found")
}

func ack[T any](f *fakeService, v T) (chat.Ack[T], error) {
	if f.writeErr != nil {
		return chat.Ack[T]{}, f.writeErr
	}
	return chat.Ack[T]{Value: v, Token: f.writeToken}, nil
}

func (f *fakeService) CreateUser(_ context.Context, handle, name string) (chat.Ack[chat.NewUser], error) {
	f.record("CreateUser")
	if name == "" {
		name = handle // as the store does
	}
	return ack(f, chat.NewUser{User: chat.User{ID: 7, Handle: handle, DisplayName: name}, Token: "plt_new"})
}

func (f *fakeService) CreateConversation(_ context.Context, u chat.User, title string, ids []int64) (chat.Ack[chat.Conversation], error) {
	f.record("CreateConversation")
	return ack(f, chat.Conversation{ID: 11, Title: title, MemberIDs: append([]int64{u.ID}, ids...)})
}

func (f *fakeService) Send(_ context.Context, u chat.User, req chat.SendRequest) (chat.Ack[chat.SendResult], error) {
	f.record("Send")
	return ack(f, chat.SendResult{Message: chat.Message{ID: 100, ConversationID: req.ConversationID, SenderID: u.ID, Body: req.Body}, Created: !f.replayed})
}

func (f *fakeService) MarkRead(_ context.Context, u chat.User, convID, messageID int64) (chat.Ack[int64], error) {
	f.record("MarkRead")
	return ack(f, int64(3))
}

func (f *fakeService) History(_ context.Context, u chat.User, req chat.HistoryRequest, opts chat.ReadOptions) (chat.Read, error) {
	f.record("History")
	f.mu.Lock()
	f.lastHistory, f.lastOpts = req, opts
	f.mu.Unlock()
	return f.read("History")
}

func (f *fakeService) Conversations(_ context.Context, u chat.User, req chat.ListRequest, opts chat.ReadOptions) (chat.Read, error) {
	f.record("Conversations")
	f.mu.Lock()
	f.lastList, f.lastOpts = req, opts
	f.mu.Unlock()
	return f.read("Conversations")
}

func (f *fakeService) Conversation(_ context.Context, u chat.User, convID int64, opts chat.ReadOptions) (chat.Read, error) {
	f.record("Conversation")
	f.mu.Lock()
	f.lastOpts = opts
	f.mu.Unlock()
	return f.read("Conversation")
}

func (f *fakeService) Unread(_ context.Context, u chat.User, opts chat.ReadOptions) (chat.Read, error) {
	f.record("Unread")
	f.mu.Lock()
	f.lastOpts = opts
	f.mu.Unlock()
	return f.read("Unread")
}

func (f *fakeService) Status(context.Context) chat.Status {
	f.record("Status")
	return chat.Status{Replicas: []string{}, Cache: chat.CacheStatus{State: "up"}, Pools: map[string]any{},
		Rollouts: map[string]chat.Rollout{}, Monitors: struct{}{}}
}

func (f *fakeService) Rollouts(context.Context) ([]chat.Rollout, error) {
	f.record("Rollouts")
	return []chat.Rollout{{Endpoint: chat.EndpointMessageHistory, Percent: 10}}, nil
}

func (f *fakeService) SetRollout(_ context.Context, endpoint string, u chat.RolloutUpdate) (chat.Rollout, error) {
	f.record("SetRollout")
	if err := u.Validate(); err != nil {
		return chat.Rollout{}, err
	}
	r := chat.Rollout{Endpoint: endpoint}
	if u.Percent != nil {
		r.Percent = *u.Percent
	}
	return r, nil
}

// api is a Server on a fake service, served by httptest.
type api struct {
	t    *testing.T
	fake *fakeService
	s    *Server
	srv  *httptest.Server
	reg  *prometheus.Registry
	logs *stacktest.LogBuffer
	c    *stacktest.Client
}

func newAPI(t *testing.T, mod ...func(*Config)) *api {
	t.Helper()
	a := &api{t: t, fake: newFake(), reg: prometheus.NewRegistry(), logs: &stacktest.LogBuffer{}}
	cfg := Config{Logger: slog.New(slog.NewJSONHandler(a.logs, nil)), Gatherer: a.reg, Registerer: a.reg,
		Service: a.fake, Admin: a.fake, AdminToken: adminToken}
	for _, m := range mod {
		m(&cfg)
	}
	a.s = New(cfg)
	a.srv = httptest.NewServer(a.s)
	t.Cleanup(a.srv.Close)
	a.c = stacktest.NewClient(t, a.srv.URL, adminToken)
	return a
}

func (a *api) do(method, path, token string, body any, header ...string) stacktest.Reply {
	a.t.Helper()
	return a.c.Do(method, path, token, body, header...)
}

// bad sends a request that breaks api/openapi.yaml on purpose.
func (a *api) bad(method, path, token string, body any, header ...string) stacktest.Reply {
	a.t.Helper()
	return a.c.Invalid().Do(method, path, token, body, header...)
}
