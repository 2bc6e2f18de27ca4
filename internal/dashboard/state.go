package dashboard

import (
	"math"
	"sort"
	"strconv"
	"time"

	"github.com/parley-chat/parley/internal/chat"
)

// State is GET /dashboard/data (api/openapi.yaml #/components/schemas/Dashboard).
type State struct {
	GeneratedAt  time.Time      `json:"generated_at"`
	IntervalSecs float64        `json:"interval_seconds"`
	WindowSecs   float64        `json:"window_seconds"`
	HistorySecs  float64        `json:"history_seconds"`
	Rollouts     []chat.Rollout `json:"rollouts"`
	Canary       *struct{}      `json:"canary"` // reserved for parley canary: null
	Replicas     []ReplicaState `json:"replicas"`
	Cache        CacheState     `json:"cache"`
	Latency      []RouteLatency `json:"latency"`
	Errors       ErrorState     `json:"errors"`
	Pools        []PoolState    `json:"pools"`
	PgBouncer    PgBouncerState `json:"pgbouncer"`
	Monitors     []MonitorState `json:"monitors"`
}

// ReplicaState is one replica now, with its lag history and breaker
// transitions.
type ReplicaState struct {
	Name             string             `json:"name"`
	State            string             `json:"state"`
	Breaker          string             `json:"breaker"`
	LagSeconds       float64            `json:"lag_seconds"`
	LagBytes         int64              `json:"lag_bytes"`
	ProbedAt         *time.Time         `json:"probed_at,omitempty"`
	LagHistory       []LagSample        `json:"lag_history"`
	Transitions      []Transition       `json:"transitions"`
	TransitionsTotal map[string]float64 `json:"transitions_total"`
}

// LagSample is a replica's lag at one sample.
type LagSample struct {
	At         float64  `json:"at"` // Unix seconds
	LagSeconds *float64 `json:"lag_seconds"`
	Breaker    string   `json:"breaker,omitempty"`
}

// Transition is a breaker transition seen between two samples.
type Transition struct {
	At time.Time `json:"at"`
	To string    `json:"to"`
}

// CacheState is the cache's state and hit ratio over the window.
type CacheState struct {
	State      string          `json:"state"`
	HitRatio   *float64        `json:"hit_ratio"`
	PerSecond  float64         `json:"requests_per_second"`
	ByEndpoint []CacheEndpoint `json:"endpoints"`
}

// CacheEndpoint is one endpoint's cache use over the window.
type CacheEndpoint struct {
	Endpoint  string   `json:"endpoint"`
	HitRatio  *float64 `json:"hit_ratio"`
	PerSecond float64  `json:"requests_per_second"`
}

// RouteLatency is one route and cohort's traffic and latency over the window.
type RouteLatency struct {
	Route     string   `json:"route"`
	Cohort    string   `json:"cohort"`
	PerSecond float64  `json:"requests_per_second"`
	P50       *float64 `json:"p50_seconds"`
	P95       *float64 `json:"p95_seconds"`
}

// ErrorState is the share of answers with status 500 or more over the window.
type ErrorState struct {
	Ratio           *float64            `json:"ratio"`
	PerSecond       float64             `json:"requests_per_second"`
	ErrorsPerSecond float64             `json:"errors_per_second"`
	Cohorts         map[string]*float64 `json:"cohorts"`
}

// PoolState is one connection pool now, and its acquire wait over the window.
type PoolState struct {
	Name       string   `json:"name"`
	Saturation float64  `json:"saturation"`
	InUse      float64  `json:"in_use"`
	Max        float64  `json:"max"`
	AcquireP95 *float64 `json:"acquire_p95_seconds"`
}

// PgBouncerState is PgBouncer as its monitor last saw it.
type PgBouncerState struct {
	Monitored bool                `json:"monitored"`
	Up        bool                `json:"up"`
	Databases []PgBouncerDatabase `json:"databases"`
}

// PgBouncerDatabase is one PgBouncer database's saturation and queue.
type PgBouncerDatabase struct {
	Database       string   `json:"database"`
	Saturation     *float64 `json:"saturation"`
	QueueWaitSecs  float64  `json:"queue_wait_seconds"`
	ClientsWaiting float64  `json:"clients_waiting"`
}

// MonitorState is a database monitor's last success.
type MonitorState struct {
	Name        string     `json:"name"`
	LastSuccess *time.Time `json:"last_success"`
	AgeSeconds  *float64   `json:"age_seconds"`
}

// finite is v, or nil when it is not a number a JSON document can hold.
func finite(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// nonNeg is v clamped at 0 (NaN: 0).
func nonNeg(v float64) float64 {
	if math.IsNaN(v) || v < 0 || math.IsInf(v, 0) {
		return 0
	}
	return v
}

// ratio is a/b, nil when b is 0.
func ratio(a, b float64) *float64 {
	if b <= 0 {
		return nil
	}
	return finite(math.Min(1, math.Max(0, a/b)))
}

// window computes the rates, ratios and percentiles between then and now.
func window(st *State, now, then *snapshot) {
	dt := 0.0
	if then != nil {
		dt = now.at.Sub(then.at).Seconds()
	}
	perSecond := func(v float64) float64 {
		if dt <= 0 {
			return 0
		}
		return nonNeg(v / dt)
	}

	// Latency by route and cohort (routes with traffic in the window).
	st.Latency = []RouteLatency{}
	if then != nil {
		for _, d := range deltas(now, then, famHTTPDuration, nil) {
			if d.count <= 0 {
				continue
			}
			rl := RouteLatency{Route: d.labels["route"], Cohort: d.labels["cohort"], PerSecond: perSecond(d.count)}
			if v, ok := quantile(0.5, d.bounds, d.buckets, d.count); ok {
				rl.P50 = finite(v)
			}
			if v, ok := quantile(0.95, d.bounds, d.buckets, d.count); ok {
				rl.P95 = finite(v)
			}
			st.Latency = append(st.Latency, rl)
		}
	}
	sort.Slice(st.Latency, func(i, j int) bool {
		a, b := st.Latency[i], st.Latency[j]
		return a.Route < b.Route || a.Route == b.Route && a.Cohort < b.Cohort
	})

	// Errors: status 500 or more over all answers.
	st.Errors = ErrorState{Cohorts: map[string]*float64{}}
	if then != nil {
		total, errs := 0.0, 0.0
		byCohort := map[string][2]float64{}
		for _, d := range deltas(now, then, famHTTPRequests, nil) {
			code, _ := strconv.Atoi(d.labels["code"])
			c := byCohort[d.labels["cohort"]]
			total += d.value
			c[0] += d.value
			if code >= 500 {
				errs += d.value
				c[1] += d.value
			}
			byCohort[d.labels["cohort"]] = c
		}
		st.Errors.Ratio = ratio(errs, total)
		st.Errors.PerSecond, st.Errors.ErrorsPerSecond = perSecond(total), perSecond(errs)
		for cohort, c := range byCohort {
			st.Errors.Cohorts[cohort] = ratio(c[1], c[0])
		}
	}

	// Cache: hits over hits, misses and errors (bypasses were not eligible).
	st.Cache = CacheState{State: "down", ByEndpoint: []CacheEndpoint{}}
	if v, ok := now.value(famCacheUp, nil); ok && v == 1 {
		st.Cache.State = "up"
	}
	if then != nil {
		type hm struct{ hit, all float64 }
		byEndpoint := map[string]hm{}
		var total hm
		for _, d := range deltas(now, then, famCacheRequests, nil) {
			if d.labels["result"] == "bypass" {
				continue
			}
			e := byEndpoint[d.labels["endpoint"]]
			e.all += d.value
			total.all += d.value
			if d.labels["result"] == "hit" {
				e.hit += d.value
				total.hit += d.value
			}
			byEndpoint[d.labels["endpoint"]] = e
		}
		st.Cache.HitRatio, st.Cache.PerSecond = ratio(total.hit, total.all), perSecond(total.all)
		for ep, e := range byEndpoint {
			st.Cache.ByEndpoint = append(st.Cache.ByEndpoint, CacheEndpoint{Endpoint: ep, HitRatio: ratio(e.hit, e.all), PerSecond: perSecond(e.all)})
		}
		sort.Slice(st.Cache.ByEndpoint, func(i, j int) bool { return st.Cache.ByEndpoint[i].Endpoint < st.Cache.ByEndpoint[j].Endpoint })
	}

	// Pools: saturation now, acquire wait p95 over the window.
	st.Pools = []PoolState{}
	acquire := map[string]point{}
	if then != nil {
		for _, d := range deltas(now, then, famPoolAcquire, nil) {
			acquire[d.labels["pool"]] = d
		}
	}
	for _, p := range now.find(famPoolSaturation, nil) {
		name := p.labels["pool"]
		ps := PoolState{Name: name, Saturation: nonNeg(p.value)}
		ps.InUse, _ = now.value(famPoolConns, map[string]string{"pool": name, "state": "in_use"})
		ps.Max, _ = now.value(famPoolConns, map[string]string{"pool": name, "state": "max"})
		if d, ok := acquire[name]; ok {
			if v, ok := quantile(0.95, d.bounds, d.buckets, d.count); ok {
				ps.AcquireP95 = finite(v)
			}
		}
		st.Pools = append(st.Pools, ps)
	}
	sort.Slice(st.Pools, func(i, j int) bool { return poolOrder(st.Pools[i].Name) < poolOrder(st.Pools[j].Name) })

	// PgBouncer, as the monitor last saw it.
	st.PgBouncer = PgBouncerState{Databases: []PgBouncerDatabase{}}
	if v, ok := now.value(famPgbUp, nil); ok {
		st.PgBouncer.Monitored, st.PgBouncer.Up = true, v == 1
	}
	for _, p := range now.find(famPgbQueueWait, nil) {
		db := p.labels["database"]
		d := PgBouncerDatabase{Database: db, QueueWaitSecs: nonNeg(p.value)}
		if v, ok := now.value(famPgbSaturation, map[string]string{"database": db}); ok {
			d.Saturation = finite(nonNeg(v))
		}
		d.ClientsWaiting, _ = now.value(famPgbClients, map[string]string{"database": db, "state": "waiting"})
		st.PgBouncer.Databases = append(st.PgBouncer.Databases, d)
	}
	sort.Slice(st.PgBouncer.Databases, func(i, j int) bool {
		return st.PgBouncer.Databases[i].Database < st.PgBouncer.Databases[j].Database
	})

	// Monitors: the time since each one's last success.
	st.Monitors = []MonitorState{}
	for _, p := range now.find(famMonitorSuccess, nil) {
		m := MonitorState{Name: p.labels["monitor"]}
		if p.value > 0 {
			t := time.Unix(0, int64(p.value*1e9)).UTC()
			m.LastSuccess = &t
			m.AgeSeconds = finite(nonNeg(now.at.Sub(t).Seconds()))
		}
		st.Monitors = append(st.Monitors, m)
	}
	sort.Slice(st.Monitors, func(i, j int) bool { return st.Monitors[i].Name < st.Monitors[j].Name })
}

// poolOrder puts the primary's pool first, then the replicas' by name.
func poolOrder(name string) string {
	if name == "primary" {
		return ""
	}
	return name
}
