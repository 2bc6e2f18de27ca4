package loadgen

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"sort"
	"strconv"
)

// The operations a scenario mixes, against api.md.
const (
	OpHistory          = "history"           // a history page: newest, or the next older page of a cursor chain
	OpHistoryDeep      = "history_deep"      // a history page from a cursor deep in a conversation, then older
	OpSend             = "send"              // POST a message with a unique Idempotency-Key
	OpConversationList = "conversation_list" // GET /v1/conversations?limit=30
	OpUnread           = "unread"            // GET /v1/unread
)

// KnownOps lists every operation name a mix may use.
var KnownOps = []string{OpHistory, OpHistoryDeep, OpSend, OpConversationList, OpUnread}

func knownOp(name string) bool {
	for _, o := range KnownOps {
		if o == name {
			return true
		}
	}
	return false
}

// maxChainDepth is how many older pages a history cursor chain follows
// before it starts over at another conversation.
const maxChainDepth = 5

// chatWorkload issues a weighted mix of API operations over a dataset.
type chatWorkload struct {
	ds       *dataset
	ops      []string  // names, index = Request.Op
	cum      []float64 // cumulative weights, normalised to 1
	runID    string
	seed     uint64
	basePath string
}

func newChatWorkload(ds *dataset, mix map[string]float64, runID string, seed uint64, basePath string) (*chatWorkload, error) {
	names := make([]string, 0, len(mix))
	for name, w := range mix {
		if !knownOp(name) {
			return nil, fmt.Errorf("unknown operation %q (want one of %v)", name, KnownOps)
		}
		if w < 0 {
			return nil, fmt.Errorf("operation %q: negative weight", name)
		}
		if w > 0 {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("the mix has no operation with a positive weight")
	}
	sort.Slice(names, func(i, j int) bool { return opOrder(names[i]) < opOrder(names[j]) })
	wl := &chatWorkload{ds: ds, ops: names, runID: runID, seed: seed, basePath: basePath}
	var sum float64
	for _, n := range names {
		sum += mix[n]
	}
	var acc float64
	for _, n := range names {
		acc += mix[n] / sum
		wl.cum = append(wl.cum, acc)
	}
	wl.cum[len(wl.cum)-1] = 1
	return wl, nil
}

func opOrder(name string) int {
	for i, o := range KnownOps {
		if o == name {
			return i
		}
	}
	return len(KnownOps)
}

func (wl *chatWorkload) Ops() []string { return wl.ops }

func (wl *chatWorkload) NewSource(worker int) Source {
	r := rand.New(rand.NewPCG(wl.seed, uint64(worker)+1))
	return &chatSource{
		wl:     wl,
		worker: worker,
		r:      r,
		zipf:   rand.NewZipf(r, zipfExponent, 1, uint64(len(wl.ds.convs)-1)),
	}
}

// chain is a walk through one conversation's history, page by page.
type chain struct {
	conv   int
	user   int
	cursor string
	depth  int
	gen    uint64 // bumped when the chain starts over; answers of older generations are ignored
}

type chatSource struct {
	wl     *chatWorkload
	worker int
	r      *rand.Rand
	zipf   *rand.Zipf
	seq    int
	chains [2]chain // history, history_deep
}

// historyState tells Done which chain (and which generation of it) a
// history response belongs to: with pipelining, several pages of a chain
// are in flight, and an answer may arrive after the chain moved on to
// another conversation.
type historyState struct {
	chain int
	gen   uint64
}

func (s *chatSource) pick() int {
	f := s.r.Float64()
	for i, c := range s.wl.cum {
		if f < c {
			return i
		}
	}
	return len(s.wl.cum) - 1
}

// member picks a conversation by popularity and one of its members.
func (s *chatSource) member() (conv, usr int) {
	conv = int(s.zipf.Uint64())
	m := s.wl.ds.convs[conv].members
	return conv, m[s.r.IntN(len(m))]
}

func (s *chatSource) Next() *Request {
	op := s.pick()
	ds := s.wl.ds
	base := s.wl.basePath
	switch s.wl.ops[op] {
	case OpHistory, OpHistoryDeep:
		deep := s.wl.ops[op] == OpHistoryDeep
		ci := 0
		if deep {
			ci = 1
		}
		ch := &s.chains[ci]
		if ch.cursor == "" || ch.depth >= maxChainDepth {
			conv, usr := s.member()
			*ch = chain{conv: conv, user: usr, gen: ch.gen + 1}
			if deep {
				c := ds.convs[conv]
				c.mu.Lock()
				if len(c.cursors) > 0 {
					ch.cursor = c.cursors[s.r.IntN(len(c.cursors))]
				}
				c.mu.Unlock()
			}
		}
		path := base + "/v1/conversations/" + ds.convs[ch.conv].id + "/messages?limit=50"
		if ch.cursor != "" {
			path += "&before=" + url.QueryEscape(ch.cursor)
		}
		return &Request{Op: op, Method: "GET", Path: path, Token: ds.users[ch.user].token, WantBody: true,
			State: &historyState{chain: ci, gen: ch.gen}}
	case OpSend:
		conv, usr := s.member()
		s.seq++
		body := fmt.Appendf(nil, `{"body":"load %s w%d #%d"}`, s.wl.runID, s.worker, s.seq)
		return &Request{
			Op: op, Method: "POST", Path: base + "/v1/conversations/" + ds.convs[conv].id + "/messages",
			Token: ds.users[usr].token, IdemKey: "lg-" + s.wl.runID + "-" + strconv.Itoa(s.worker) + "-" + strconv.Itoa(s.seq),
			Body: body,
		}
	case OpConversationList:
		u := s.r.IntN(len(ds.users))
		return &Request{Op: op, Method: "GET", Path: base + "/v1/conversations?limit=30", Token: ds.users[u].token}
	default: // OpUnread
		u := s.r.IntN(len(ds.users))
		return &Request{Op: op, Method: "GET", Path: base + "/v1/unread", Token: ds.users[u].token}
	}
}

func (s *chatSource) Done(req *Request, status int, body []byte) {
	st, ok := req.State.(*historyState)
	if !ok {
		return
	}
	ch := &s.chains[st.chain]
	if st.gen != ch.gen {
		return // the chain has moved on
	}
	if status != 200 {
		ch.cursor = "" // start over elsewhere
		return
	}
	next, ok := nextCursor(body)
	if !ok || next == "" {
		ch.cursor = ""
		return
	}
	ch.cursor = next
	ch.depth++
}

// nextCursor extracts the top-level "next_cursor" of a history page without
// decoding the whole page (the generator's CPU is precious). Message objects
// carry "cursor", never "next_cursor", so the key is unique.
func nextCursor(body []byte) (string, bool) {
	i := bytes.LastIndex(body, []byte(`"next_cursor"`))
	if i < 0 {
		return "", false
	}
	rest := bytes.TrimLeft(body[i+len(`"next_cursor"`):], " \t\r\n")
	if len(rest) == 0 || rest[0] != ':' {
		return "", false
	}
	rest = bytes.TrimLeft(rest[1:], " \t\r\n")
	if bytes.HasPrefix(rest, []byte("null")) {
		return "", true
	}
	if len(rest) == 0 || rest[0] != '"' {
		return "", false
	}
	end := -1
	for j := 1; j < len(rest); j++ {
		if rest[j] == '\\' {
			j++
			continue
		}
		if rest[j] == '"' {
			end = j
			break
		}
	}
	if end < 0 {
		return "", false
	}
	lit := rest[:end+1]
	if bytes.IndexByte(lit, '\\') < 0 {
		return string(lit[1 : len(lit)-1]), true
	}
	var s string
	if err := json.Unmarshal(lit, &s); err != nil {
		return "", false
	}
	return s, true
}
