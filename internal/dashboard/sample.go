package dashboard

import (
	"math"
	"sort"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// The dashboard reads the metrics contract (metrics.md): the families
// below, by name, from the server's own registry. It never scrapes over
// HTTP and never keeps more than a window of them.
const (
	famHTTPRequests   = "parley_http_requests_total"
	famHTTPDuration   = "parley_http_request_duration_seconds"
	famCacheRequests  = "parley_cache_requests_total"
	famCacheUp        = "parley_cache_up"
	famPoolSaturation = "parley_db_pool_saturation_ratio"
	famPoolConns      = "parley_db_pool_connections"
	famPoolAcquire    = "parley_db_pool_acquire_duration_seconds"
	famLagSeconds     = "parley_replica_lag_seconds"
	famLagBytes       = "parley_replica_lag_bytes"
	famBreakerState   = "parley_replica_breaker_state"
	famTransitions    = "parley_replica_breaker_transitions_total"
	famPgbUp          = "parley_pgbouncer_up"
	famPgbSaturation  = "parley_pgbouncer_pool_saturation_ratio"
	famPgbQueueWait   = "parley_pgbouncer_queue_wait_seconds"
	famPgbClients     = "parley_pgbouncer_clients"
	famMonitorSuccess = "parley_monitor_last_success_timestamp_seconds"
)

var sampledFamilies = map[string]bool{
	famHTTPRequests: true, famHTTPDuration: true, famCacheRequests: true, famCacheUp: true,
	famPoolSaturation: true, famPoolConns: true, famPoolAcquire: true,
	famLagSeconds: true, famLagBytes: true, famBreakerState: true, famTransitions: true,
	famPgbUp: true, famPgbSaturation: true, famPgbQueueWait: true, famPgbClients: true,
	famMonitorSuccess: true,
}

// point is one series of a family at one time: a counter's or a gauge's
// value, or a histogram's cumulative bucket counts.
type point struct {
	labels  map[string]string
	key     string // the labels, canonical: k=v joined by commas
	value   float64
	count   float64
	bounds  []float64 // upper bounds, ascending, without +Inf
	buckets []float64 // cumulative counts per bound
}

// snapshot is the sampled families at one time.
type snapshot struct {
	at  time.Time
	fam map[string][]point
}

// snapshotOf keeps the sampled families of a Gather.
func snapshotOf(at time.Time, mfs []*dto.MetricFamily) *snapshot {
	s := &snapshot{at: at, fam: map[string][]point{}}
	for _, mf := range mfs {
		name := mf.GetName()
		if !sampledFamilies[name] {
			continue
		}
		pts := make([]point, 0, len(mf.GetMetric()))
		for _, m := range mf.GetMetric() {
			p := point{labels: make(map[string]string, len(m.GetLabel()))}
			keys := make([]string, 0, len(m.GetLabel()))
			for _, lp := range m.GetLabel() {
				p.labels[lp.GetName()] = lp.GetValue()
				keys = append(keys, lp.GetName()+"="+lp.GetValue())
			}
			sort.Strings(keys)
			p.key = strings.Join(keys, ",")
			switch {
			case m.Counter != nil:
				p.value = m.GetCounter().GetValue()
			case m.Gauge != nil:
				p.value = m.GetGauge().GetValue()
			case m.Histogram != nil:
				h := m.GetHistogram()
				p.count = float64(h.GetSampleCount())
				for _, b := range h.GetBucket() {
					if math.IsInf(b.GetUpperBound(), 1) {
						continue
					}
					p.bounds = append(p.bounds, b.GetUpperBound())
					p.buckets = append(p.buckets, float64(b.GetCumulativeCount()))
				}
			}
			pts = append(pts, p)
		}
		s.fam[name] = pts
	}
	return s
}

// find returns the series of family name whose labels include want.
func (s *snapshot) find(name string, want map[string]string) []point {
	if s == nil {
		return nil
	}
	var out []point
next:
	for _, p := range s.fam[name] {
		for k, v := range want {
			if p.labels[k] != v {
				continue next
			}
		}
		out = append(out, p)
	}
	return out
}

// value is the sum of the matching series' values, and whether any matched.
func (s *snapshot) value(name string, want map[string]string) (float64, bool) {
	pts := s.find(name, want)
	v := 0.0
	for _, p := range pts {
		v += p.value
	}
	return v, len(pts) > 0
}

// delta is a counter's or histogram's increase from then to now for one
// series (by key): a series absent then counts from zero, and a reset
// (now below then) counts from zero too.
func delta(now, then point, thenOK bool) point {
	if !thenOK {
		return now
	}
	d := point{labels: now.labels, key: now.key, value: now.value - then.value, count: now.count - then.count, bounds: now.bounds}
	if d.value < 0 || d.count < 0 {
		return now
	}
	if len(then.buckets) == len(now.buckets) {
		d.buckets = make([]float64, len(now.buckets))
		for i := range now.buckets {
			d.buckets[i] = now.buckets[i] - then.buckets[i]
		}
	} else {
		d.buckets = now.buckets
	}
	return d
}

// deltas are the increases of every series of family name (with labels
// including want) between then and now.
func deltas(now, then *snapshot, name string, want map[string]string) []point {
	prev := map[string]point{}
	for _, p := range then.find(name, want) {
		prev[p.key] = p
	}
	var out []point
	for _, p := range now.find(name, want) {
		q, ok := prev[p.key]
		out = append(out, delta(p, q, ok))
	}
	return out
}

// quantile estimates the q-quantile (0–1) of a histogram's observations
// from its cumulative bucket counts as Prometheus's histogram_quantile does:
// linear within the bucket, the highest finite bound when the rank falls in
// +Inf. ok is false with no observations.
func quantile(q float64, bounds, buckets []float64, count float64) (float64, bool) {
	if count <= 0 || len(bounds) == 0 {
		return 0, false
	}
	rank := q * count
	lower, below := 0.0, 0.0
	for i, upper := range bounds {
		if buckets[i] >= rank {
			in := buckets[i] - below
			if in <= 0 {
				return upper, true
			}
			return lower + (upper-lower)*(rank-below)/in, true
		}
		lower, below = upper, buckets[i]
	}
	return bounds[len(bounds)-1], true
}
