// Package chaos is `parley chaos`: fault scenarios on the real stack, a
// workload of API clients that runs through each of them, and a judge of
// what the clients saw.
//
// A run brings up a throwaway stack (internal/stack) and two API instances
// built by internal/app (or uses servers given with --target), puts every
// read endpoint on the optimized path (cache and replica), and for each
// scenario: creates its users and conversations, runs the workload for a
// before phase, injects the fault with a real mechanism (replay paused,
// Redis stopped and hung, PgBouncer's pool held, a black-holed TCP link,
// CPU-heavy queries, pg_ctl restart -m immediate, PgBouncer killed and hung,
// one instance's Redis link dropped, clients hanging up mid-send), heals it,
// runs an after phase, lets the clients finish their retries, and judges.
//
// The workload (workload.go) is several clients, each a writer with a
// conversation of its own (and a passive partner) plus one conversation
// shared by all writers. A client reads every read endpoint and sends with
// an Idempotency-Key; after an error or a timeout it retries the same key
// (honouring Retry-After), as a real client does. After each acknowledged
// send its next read goes to the other instance and must show the send
// (read-your-writes across instances, issue 16).
//
// The judge (judge.go) is Jepsen's set checker, simplified: after healing it
// reads every workload message from the primary; every acknowledged send is
// there exactly once (lost, duplicated), no row exists that was never
// attempted, a retried key never made two rows, sends acknowledged one
// after the other are stored in that order, every writer's next read after
// an acknowledged send showed it, and no read served by the cache or the
// primary missed a message acknowledged before it began. Each scenario then
// checks its own targets (scenarios.go) on the phases' figures: requests,
// errors by class, latency percentiles, read sources, time to detect and
// time to recover.
package chaos
