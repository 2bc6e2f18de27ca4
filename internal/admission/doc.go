// Package admission is Parley's overload protection at the HTTP edge: an
// adaptive concurrency limit per class of request (reads, writes), a short
// bounded queue in front of it, and the decision to shed a request — answer
// it at once with "overloaded" — instead of letting it wait for a database
// connection until its deadline. It is policy only: it does no I/O, knows no
// HTTP and imports the standard library alone. internal/httpapi wraps the
// API's routes with it (docs/runbooks.md, /work/shared/design/overload.md).
//
// # Why a concurrency limit
//
// A server past its capacity that admits every request builds a queue in
// front of the database pool: every request then waits the whole queue, and
// goodput collapses once the waits pass the clients' patience. Bounding the
// requests in flight keeps the queue short; the requests beyond the bound
// are refused in microseconds and can be retried elsewhere or later. The
// bound must follow the capacity, which changes (a slower disk, a lagging
// replica, other tenants of the machine), hence an adaptive one.
//
// # The limit (gradient, per window)
//
// Requests are timed from admission to completion (pool and PgBouncer waits
// included). A window lasts Window (250 ms), or longer until it has
// MinSamples successful completions (fewer say nothing) or a drop; at its
// end the limit L moves:
//
//   - a drop (a request that failed for want of capacity: the pool's wait
//     bound, its deadline) or a p90 over MaxLatency: L ← Backoff·L (AIMD's
//     multiplicative decrease);
//   - otherwise, with baseline b (below), the window's p90 s and the target
//     t = max(Tolerance·b, LatencyFloor): g = clamp(t/s, 0.5, 1) and
//     L ← 0.8·L + 0.2·(g·L + √L): while the p90 stays within the target L
//     grows by 0.2·√L, beyond it L settles where the queueing it causes is
//     bounded (at L = 1/(1−g)², e.g. a p90 of 1.13 t at L = 80);
//   - L does not grow while fewer than L/2 requests were in flight (no demand
//     proves nothing), and stays within [Min, Max].
//
// The baseline is the no-load service time: an exponential average of the
// p90 of windows whose arrivals found fewer than L/2 requests in flight (so
// it does not drift up with the queueing it is meant to detect, and needs no
// probing at a pinned low concurrency, which would shed healthy traffic).
// After FloorResetWindows windows at (or next to) Min it is forgotten and learnt anew: the
// system may have become slower for good (a database 200 ms slower), and the limit
// must then be able to climb back.
//
// LatencyFloor (100 ms) departs from the pure gradient of the anchors
// (Netflix's Gradient2, Envoy): measured on a 2-core machine where the load
// generator, the server and the databases share the CPUs, the service time
// rose from ~5 ms to 30–50 ms with the throughput at any concurrency, and a
// limit aimed at twice the no-load latency fell to the floor and served a
// third of the capacity while its admitted requests were at a p95 of 127 ms
// against an SLO of 350 ms (docs/performance.md#overload). A p90 under the
// floor is good enough whatever the baseline says.
//
// # The queue (CoDel with adaptive LIFO)
//
// A request that finds the limit reached waits in the class's queue (at most
// L waiters), for a permit handed over by a finishing request. While the
// queue has drained within the last QueueInterval (100 ms), it is served
// first-in first-out and a request waits at most QueueWait (5 ms): a burst
// is smoothed, not refused. Once a queue has stood for longer than that, the
// service is last-in first-out and the wait bound QueueStandingWait (5 ms),
// also for the waiters already there (the shed answer must come within
// ~10 ms, not at a longer bound that LIFO would let run out):
// under sustained overload the newest requests, whose clients are still
// waiting, are served, and the rest are refused quickly instead of late.
// A request whose deadline leaves less than the baseline is refused at once
// (it could not finish in time). Sheddable requests (the unread counter,
// which clients poll) are admitted only below 90 % of the limit and never
// queue.
package admission
