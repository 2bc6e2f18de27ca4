package rollout

import (
	"math"
	"testing"

	"github.com/parley-chat/parley/internal/chat"
)

func TestBucketStableAndMonotonic(t *testing.T) {
	const n = 10000
	for _, ep := range chat.RolloutEndpoints() {
		// Stable: the same input always gives the same bucket.
		for id := int64(1); id <= 100; id++ {
			if Bucket(ep, id) != Bucket(ep, id) {
				t.Fatalf("Bucket(%s,%d) not stable", ep, id)
			}
		}
		prev := map[int64]bool{}
		for _, pct := range []int{0, 1, 5, 10, 20, 50, 90, 99, 100} {
			in := map[int64]bool{}
			for id := int64(1); id <= n; id++ {
				if InRollout(ep, id, pct) {
					in[id] = true
				}
			}
			// Monotonic: everyone in at a lower percent stays in.
			for id := range prev {
				if !in[id] {
					t.Fatalf("%s: user %d in at a lower percent, out at %d%%", ep, id, pct)
				}
			}
			prev = in
			// Share within 4 standard deviations of a binomial.
			p := float64(pct) / 100
			want := p * n
			tol := 4*math.Sqrt(n*p*(1-p)) + 1
			if got := float64(len(in)); math.Abs(got-want) > tol {
				t.Errorf("%s at %d%%: %v of %d users in, want %v ± %.0f", ep, pct, got, n, want, tol)
			}
		}
	}
}

func TestBucketIndependentPerEndpoint(t *testing.T) {
	// The endpoints' 10% cohorts should overlap like independent draws (~1%).
	both := 0
	const n = 10000
	for id := int64(1); id <= n; id++ {
		if InRollout(chat.EndpointMessageHistory, id, 10) && InRollout(chat.EndpointConversationList, id, 10) {
			both++
		}
	}
	if both < 50 || both > 160 {
		t.Errorf("overlap of two 10%% cohorts = %d of %d, want ~100", both, n)
	}
}

func TestBucketRange(t *testing.T) {
	for _, id := range []int64{math.MinInt64, -1, 0, 1, math.MaxInt64} {
		if b := Bucket(chat.EndpointMessageHistory, id); b < 0 || b >= Buckets {
			t.Errorf("Bucket(%d) = %d out of range", id, b)
		}
	}
}

func TestUpdateValidate(t *testing.T) {
	ip := func(v int) *int { return &v }
	tests := []struct {
		name    string
		u       chat.RolloutUpdate
		wantErr bool
	}{
		{"empty", chat.RolloutUpdate{}, false},
		{"zero", chat.RolloutUpdate{Percent: ip(0)}, false},
		{"hundred", chat.RolloutUpdate{Percent: ip(100)}, false},
		{"negative", chat.RolloutUpdate{Percent: ip(-1)}, true},
		{"over", chat.RolloutUpdate{Percent: ip(101)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.u.Validate(); (err != nil) != tt.wantErr {
				t.Errorf("Validate() = %v, wantErr %v", err, tt.wantErr)
			}
		})
	}
}

func BenchmarkBucket(b *testing.B) {
	for i := 0; b.Loop(); i++ {
		_ = Bucket(chat.EndpointMessageHistory, int64(i))
	}
}
