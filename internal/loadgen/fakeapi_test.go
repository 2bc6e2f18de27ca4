package loadgen

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeAPI is an in-memory stand-in for the parts of api.md the scenarios
// use, strict where the scenario driver could get things wrong: unknown
// cursors are 400, non-members get 404, a reused Idempotency-Key replays.
// (It tests the scenario driver; the integration tests run the scenarios
// against a real parley serve.)
type fakeAPI struct {
	*httptest.Server
	mu       sync.Mutex
	users    map[string]*fakeUser // by token
	byID     map[string]*fakeUser
	handles  map[string]bool
	convs    map[string]*fakeConv
	idem     map[string]fakeMsg // sender + key
	nextID   int
	replays  int // sends answered 200 from the idempotency table
	cursored int // history requests with a before cursor
	badCurs  int
	reqs     map[string]int // per route
	convHits map[string]int // history + sends per conversation
}

type fakeUser struct{ id, handle, token string }

type fakeConv struct {
	id      string
	members map[string]bool
	msgs    []fakeMsg
}

type fakeMsg struct {
	ID     string `json:"id"`
	Conv   string `json:"conversation_id"`
	Sender string `json:"sender_id"`
	Body   string `json:"body"`
	At     string `json:"created_at"`
	Cursor string `json:"cursor"`
}

const fakeAdmin = "admin-secret"

func newFakeAPI(t *testing.T) *fakeAPI {
	t.Helper()
	f := &fakeAPI{users: map[string]*fakeUser{}, byID: map[string]*fakeUser{}, handles: map[string]bool{},
		convs: map[string]*fakeConv{}, idem: map[string]fakeMsg{}, reqs: map[string]int{}, convHits: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/users", f.createUser)
	mux.HandleFunc("POST /v1/conversations", f.auth(f.createConv))
	mux.HandleFunc("GET /v1/conversations", f.auth(f.listConvs))
	mux.HandleFunc("POST /v1/conversations/{id}/messages", f.auth(f.send))
	mux.HandleFunc("GET /v1/conversations/{id}/messages", f.auth(f.history))
	mux.HandleFunc("GET /v1/unread", f.auth(func(w http.ResponseWriter, r *http.Request, u *fakeUser) {
		f.count("unread")
		writeJSON(w, 200, map[string]any{"total": 0, "conversations": []any{}})
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { f.count("healthz") })
	f.Server = httptest.NewUnstartedServer(mux)
	// As parley serve: a new connection must send its first request soon.
	f.Config.ReadHeaderTimeout = 300 * time.Millisecond
	f.Start()
	t.Cleanup(f.Close)
	return f
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func apiErr(w http.ResponseWriter, status int, code string) {
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": code}})
}

func (f *fakeAPI) count(route string) {
	f.mu.Lock()
	f.reqs[route]++
	f.mu.Unlock()
}

func (f *fakeAPI) id() string {
	f.nextID++
	return strconv.Itoa(f.nextID)
}

func (f *fakeAPI) auth(h func(http.ResponseWriter, *http.Request, *fakeUser)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		f.mu.Lock()
		u := f.users[tok]
		f.mu.Unlock()
		if u == nil {
			apiErr(w, 401, "unauthenticated")
			return
		}
		h(w, r, u)
	}
}

func (f *fakeAPI) createUser(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+fakeAdmin {
		apiErr(w, 401, "unauthenticated")
		return
	}
	var in struct {
		Handle      string `json:"handle"`
		DisplayName string `json:"display_name"`
	}
	if json.NewDecoder(r.Body).Decode(&in) != nil || in.Handle == "" || len(in.Handle) > 32 {
		apiErr(w, 400, "invalid_argument")
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs["create_user"]++
	if f.handles[in.Handle] {
		apiErr(w, 409, "conflict")
		return
	}
	f.handles[in.Handle] = true
	u := &fakeUser{id: "u" + f.id(), handle: in.Handle}
	u.token = "tok-" + u.id
	f.users[u.token], f.byID[u.id] = u, u
	writeJSON(w, 201, map[string]string{"id": u.id, "handle": u.handle, "display_name": in.DisplayName, "token": u.token})
}

func (f *fakeAPI) createConv(w http.ResponseWriter, r *http.Request, u *fakeUser) {
	var in struct {
		Title     string   `json:"title"`
		MemberIDs []string `json:"member_ids"`
	}
	if json.NewDecoder(r.Body).Decode(&in) != nil {
		apiErr(w, 400, "invalid_argument")
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs["create_conversation"]++
	c := &fakeConv{id: "c" + f.id(), members: map[string]bool{u.id: true}}
	for _, m := range in.MemberIDs {
		if f.byID[m] == nil {
			apiErr(w, 400, "invalid_argument")
			return
		}
		c.members[m] = true
	}
	f.convs[c.id] = c
	writeJSON(w, 201, map[string]any{"id": c.id, "title": in.Title})
}

func (f *fakeAPI) listConvs(w http.ResponseWriter, r *http.Request, u *fakeUser) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs["conversation_list"]++
	var out []map[string]string
	for _, c := range f.convs {
		if c.members[u.id] {
			out = append(out, map[string]string{"id": c.id})
		}
	}
	writeJSON(w, 200, map[string]any{"conversations": out, "next_cursor": nil})
}

func (f *fakeAPI) conv(w http.ResponseWriter, r *http.Request, u *fakeUser) *fakeConv {
	c := f.convs[r.PathValue("id")]
	if c == nil || !c.members[u.id] {
		apiErr(w, 404, "not_found")
		return nil
	}
	return c
}

func (f *fakeAPI) send(w http.ResponseWriter, r *http.Request, u *fakeUser) {
	var in struct {
		Body string `json:"body"`
	}
	if json.NewDecoder(r.Body).Decode(&in) != nil || strings.TrimSpace(in.Body) == "" {
		apiErr(w, 400, "invalid_argument")
		return
	}
	key := r.Header.Get("Idempotency-Key")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs["send"]++
	c := f.conv(w, r, u)
	if c == nil {
		return
	}
	f.convHits[c.id]++
	if key != "" {
		if m, ok := f.idem[u.id+"\x00"+key]; ok {
			if m.Body != in.Body {
				apiErr(w, 409, "conflict")
				return
			}
			f.replays++
			writeJSON(w, 200, m)
			return
		}
	}
	id := f.id()
	m := fakeMsg{ID: id, Conv: c.id, Sender: u.id, Body: in.Body, At: time.Now().UTC().Format(time.RFC3339Nano), Cursor: "cur" + id}
	c.msgs = append(c.msgs, m)
	if key != "" {
		f.idem[u.id+"\x00"+key] = m
	}
	writeJSON(w, 201, m)
}

func (f *fakeAPI) history(w http.ResponseWriter, r *http.Request, u *fakeUser) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs["history"]++
	c := f.conv(w, r, u)
	if c == nil {
		return
	}
	f.convHits[c.id]++
	limit, err := strconv.Atoi(r.URL.Query().Get("limit"))
	if err != nil || limit < 1 || limit > 100 {
		apiErr(w, 400, "invalid_argument")
		return
	}
	end := len(c.msgs) // newest first: messages [.. end) backwards
	if before := r.URL.Query().Get("before"); before != "" {
		f.cursored++
		end = -1
		for i, m := range c.msgs {
			if m.Cursor == before {
				end = i
			}
		}
		if end < 0 {
			f.badCurs++
			apiErr(w, 400, "invalid_argument")
			return
		}
	}
	start := max(0, end-limit)
	page := make([]fakeMsg, 0, end-start)
	for i := end - 1; i >= start; i-- {
		page = append(page, c.msgs[i])
	}
	var next any
	if start > 0 {
		next = c.msgs[start].Cursor
	}
	writeJSON(w, 200, map[string]any{"messages": page, "has_more": start > 0, "next_cursor": next})
}

func (f *fakeAPI) messages() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.convs {
		n += len(c.msgs)
	}
	return n
}

func (f *fakeAPI) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fmt.Sprintf("requests %v, replays %d, cursored %d, bad cursors %d", f.reqs, f.replays, f.cursored, f.badCurs)
}
