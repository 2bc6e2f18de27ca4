//go:build scale

package scale

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/parley-chat/parley/internal/stack/stacktest"
)

// TestCacheKeysShareTheirOwnersSlot: with the cache rolled out on a Redis
// Cluster, real traffic through two instances (history pages and their
// leases, conversation lists, unread counts, sends, read markers, the
// read-your-writes tokens kept in each user's record) writes keys of every
// kind; each node's own keys are listed (SCAN on the node) and every key of
// one owner — a conversation or a user — hashes (CLUSTER KEYSLOT) to its
// owner's hash-tag slot, so each Lua script and each owner's invalidation
// touches one slot. The one key without an owner is the cache epoch, in a
// slot of its own (scripts get its value, never the key). The owners spread over all
// three nodes, and no node answered any command of the traffic with an
// error (INFO errorstats: a script or a pipeline touching another slot would
// be refused with CROSSSLOT or a non-local key error; only NOSCRIPT, the
// first EVALSHA of a script on a node, is expected).
func TestCacheKeysShareTheirOwnersSlot(t *testing.T) {
	svc := newService(t)
	errorsBefore := svc.errorStats()
	a, b := svc.instance(), svc.instance()
	ins := []*instance{a, b}
	var users []stacktest.User
	for range 12 {
		users = append(users, a.CreateUser())
	}
	var convs []stacktest.Conversation
	for i := range 12 {
		c := ins[i%2].CreateConversation(users[i], fmt.Sprint("c", i), users[(i+1)%12], users[(i+5)%12])
		ins[i%2].Send(c.ID, users[i], "first")
		convs = append(convs, c)
	}
	svc.rollout(true, true, a, b)
	for round := range 2 {
		for i, c := range convs {
			in, u := ins[(i+round)%2], users[i]
			for _, p := range []string{"/v1/conversations/" + c.ID + "/messages?limit=5", "/v1/conversations", "/v1/unread", "/v1/conversations/" + c.ID} {
				for range 2 { // a fill, then (mostly) a hit
					in.Must(200, in.Do("GET", p, u.Token, nil))
				}
			}
		}
		for i, c := range convs {
			m := ins[i%2].Send(c.ID, users[(i+1)%12], fmt.Sprint("r", round))
			ins[(i+1)%2].Must(200, ins[(i+1)%2].Do("POST", "/v1/conversations/"+c.ID+"/read", users[i].Token, map[string]string{"message_id": m.ID}))
		}
	}

	// Every key of this test's prefix, node by node.
	ctx := context.Background()
	prefix := svc.db.Name + ":"
	tagRE := regexp.MustCompile(`^` + regexp.QuoteMeta(prefix) + `(\{(conv|user):[0-9]+\}):([a-z]+)`)
	type key struct {
		name, tag, kind string
		node            int
	}
	var keys []key
	epochs := 0
	for n, node := range svc.nodes() {
		var cursor uint64
		for {
			batch, next, err := node.Scan(ctx, cursor, prefix+"*", 500).Result()
			if err != nil {
				t.Fatalf("SCAN on node %d: %v", n+1, err)
			}
			for _, k := range batch {
				if k == prefix+"{epoch}" {
					// The cache epoch: one key of its own slot, passed to
					// the scripts as a value, never read beside an owner's.
					epochs++
					continue
				}
				m := tagRE.FindStringSubmatch(k)
				if m == nil {
					t.Errorf("key %q has no owner hash tag", k)
					continue
				}
				keys = append(keys, key{name: k, tag: m[1], kind: m[3], node: n})
			}
			if cursor = next; cursor == 0 {
				break
			}
		}
	}
	nodes := svc.nodes()
	slot := func(k string) int64 {
		t.Helper()
		s, err := nodes[0].ClusterKeySlot(ctx, k).Result()
		if err != nil {
			t.Fatalf("CLUSTER KEYSLOT %s: %v", k, err)
		}
		return s
	}
	kinds := map[string]int{}
	ownerNodes := map[int]bool{}
	owners := map[string]int64{}
	for _, k := range keys {
		kinds[k.kind]++
		want, ok := owners[k.tag]
		if !ok {
			want = slot(k.tag)
			owners[k.tag] = want
		}
		if got := slot(k.name); got != want {
			t.Errorf("key %s is in slot %d, its owner %s in %d", k.name, got, k.tag, want)
		}
		ownerNodes[k.node] = true
		// A data key's lease (SET NX by the lookup script, deleted after
		// the fill, so rarely seen by SCAN) is the data key plus ":lease".
		if k.kind != "gen" {
			if got := slot(k.name + ":lease"); got != want {
				t.Errorf("the lease of %s is in slot %d, its owner's is %d", k.name, got, want)
			}
		}
	}
	var kindList []string
	for k, n := range kinds {
		kindList = append(kindList, fmt.Sprintf("%s ×%d", k, n))
	}
	sort.Strings(kindList)
	t.Logf("%d keys of %d owners on %d nodes, by kind: %s", len(keys), len(owners), len(ownerNodes), strings.Join(kindList, ", "))
	if epochs != 1 {
		t.Errorf("%d cache epoch keys, want 1", epochs)
	}
	// (A user's read-your-writes token lives in their gen record.)
	for _, kind := range []string{"gen", "hist", "convs", "unread"} {
		if kinds[kind] == 0 {
			t.Errorf("no %q key found: the traffic did not exercise every key kind (%v)", kind, kinds)
		}
	}
	if len(ownerNodes) != 3 {
		t.Errorf("the owners' keys are on %d nodes, want all 3", len(ownerNodes))
	}
	var hits, errs float64
	for _, in := range ins {
		hits += stacktest.MustMetric(t, in.app.Registry, "parley_cache_requests_total", map[string]string{"result": "hit"})
		if v, ok := stacktest.Metric(t, in.app.Registry, "parley_cache_errors_total", nil); ok {
			errs += v
		}
	}
	errorsAfter := svc.errorStats()
	var refused []string
	for k, n := range errorsAfter {
		if d := n - errorsBefore[k]; d > 0 && !strings.HasSuffix(k, "NOSCRIPT") {
			refused = append(refused, fmt.Sprintf("%s ×%d", k, d))
		}
	}
	t.Logf("cache hits %.0f; client-side cache errors (timeouts on a busy machine count here) %.0f; errors the nodes answered: %v", hits, errs, refused)
	if len(refused) > 0 {
		t.Errorf("the cluster refused commands of the traffic: %v (want none: no script or pipeline may cross slots)", refused)
	}
	if hits == 0 {
		t.Errorf("no cache hit: the traffic did not exercise the cache")
	}
}

// errorStats is every node's INFO errorstats, "node<n> <error>" → count.
func (s *service) errorStats() map[string]int64 {
	s.t.Helper()
	out := map[string]int64{}
	for n, node := range s.nodes() {
		txt, err := node.Info(context.Background(), "errorstats").Result()
		if err != nil {
			s.t.Fatalf("INFO errorstats on node %d: %v", n+1, err)
		}
		for _, line := range strings.Split(txt, "\n") {
			name, rest, ok := strings.Cut(strings.TrimSpace(line), ":count=")
			if !ok {
				continue
			}
			var c int64
			fmt.Sscan(rest, &c)
			out[fmt.Sprintf("node%d %s", n+1, strings.TrimPrefix(name, "errorstat_"))] = c
		}
	}
	return out
}
