package loadgen

import (
	"math"
	"testing"
	"time"
)

func TestParseStage(t *testing.T) {
	tests := []struct {
		in   string
		want Stage
		err  bool
	}{
		{"2m,conns=5000,rate=200", Stage{2 * time.Minute, 5000, 200}, false},
		{"30s", Stage{30 * time.Second, -1, -1}, false},
		{"1m, rate=400/s", Stage{time.Minute, -1, 400}, false},
		{"1m,c=10", Stage{time.Minute, 10, -1}, false},
		{"soon", Stage{}, true},
		{"1m,conns=-3", Stage{}, true},
		{"1m,speed=3", Stage{}, true},
		{"1m,rate", Stage{}, true},
		{"1s,rate=NaN", Stage{}, true}, // found by FuzzParseStage
		{"1s,rate=Inf", Stage{}, true},
		{"-1s", Stage{}, true},
	}
	for _, tc := range tests {
		got, err := ParseStage(tc.in)
		if (err != nil) != tc.err || (!tc.err && got != tc.want) {
			t.Errorf("ParseStage(%q) = %+v, %v; want %+v, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

// The seed's spike: 5k for 2m → 10k over 1m → hold 5m → down over 1m.
func TestProfileSpike(t *testing.T) {
	sc := BuiltinScenarios()["spike"]
	p, err := newProfile(sc.Stages, sc.Connections, sc.Rate)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		at    time.Duration
		conns int
		rate  float64
		stage int
	}{
		{0, 5000, 200, 0},
		{time.Minute, 5000, 200, 0},
		{150 * time.Second, 7500, 300, 1},
		{3 * time.Minute, 10000, 400, 2},
		{7 * time.Minute, 10000, 400, 2},
		{8*time.Minute + 30*time.Second, 7500, 300, 3},
		{9 * time.Minute, 5000, 200, 3},
	}
	for _, c := range checks {
		st, conns, rate := p.at(c.at)
		if int(math.Round(conns)) != c.conns || math.Abs(rate-c.rate) > 1e-6 || st != c.stage {
			t.Errorf("at %s: stage %d, %v conns, %v/s; want stage %d, %d, %v", c.at, st, conns, rate, c.stage, c.conns, c.rate)
		}
	}
	if p.total != 9*time.Minute || p.maxConns() != 10000 {
		t.Errorf("total %s, max conns %d", p.total, p.maxConns())
	}
	// Intended sends: 120s·200 + 60s·300 + 300s·400 + 60s·300 = 180000.
	if got := p.meanRate() * p.total.Seconds(); math.Abs(got-180000) > 1 {
		t.Errorf("area = %v, want 180000", got)
	}
	n := 0
	for t0, ok := p.advance(0, 0.5); ok && t0 < p.total; t0, ok = p.advance(t0, 1) {
		n++
	}
	if n != 180000 {
		t.Errorf("arrivals = %d, want 180000", n)
	}
	// Scaled to a 9 s run at 1/100 of the connections and a tenth of the rate.
	q := p.scaled(0.01, 0.1, 1.0/60)
	if q.total != 9*time.Second || q.maxConns() != 100 || math.Abs(q.rateAt(4*time.Second)-40) > 1e-6 {
		t.Errorf("scaled: total %s, max conns %d, rate at 4s %v", q.total, q.maxConns(), q.rateAt(4*time.Second))
	}
}
