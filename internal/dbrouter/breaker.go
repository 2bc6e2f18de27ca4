package dbrouter

// BreakerState is a replica circuit breaker's state.
type BreakerState uint8

// Breaker states; the values are the parley_replica_breaker_state gauge's.
const (
	BreakerClosed   BreakerState = 0 // the replica serves reads
	BreakerHalfOpen BreakerState = 1 // recovering: only the prober talks to it
	BreakerOpen     BreakerState = 2 // out of rotation
)

// String returns "closed", "half_open" or "open".
func (s BreakerState) String() string {
	switch s {
	case BreakerClosed:
		return "closed"
	case BreakerHalfOpen:
		return "half_open"
	}
	return "open"
}

// observation is what one probe (or one failed user read) tells the breaker.
type observation struct {
	connError bool // connection-class failure: open at once
	failed    bool // the probe failed otherwise (e.g. timed out): counts as unhealthy
	paused    bool // replay paused or pause requested: open at once
	stalled   bool // replay frozen for a probe interval with WAL pending: open at once
	overLag   bool // lag at or over the threshold (seconds or bytes)
	underHalf bool // lag under half the threshold (both seconds and bytes)
}

// healthy is a probe that lets a breaker move toward closed.
func (o observation) healthy() bool {
	return !o.connError && !o.failed && !o.paused && !o.stalled && !o.overLag && o.underHalf
}

// breaker is one replica's circuit breaker with hysteresis. It opens at once
// on a connection error, paused or stalled replay, and after openAfter
// consecutive probes that are over the lag threshold or failed otherwise
// (timed out). Once open, the
// first healthy probe (lag under half the threshold) makes it half-open and
// closeAfter consecutive healthy probes close it; any unhealthy probe reopens
// it. User traffic never reaches a replica whose breaker is not closed: the
// prober alone tests it.
//
// breaker is not safe for concurrent use; replica guards it with a mutex.
type breaker struct {
	state      BreakerState
	openAfter  int // consecutive unhealthy probes that open a closed breaker
	closeAfter int // consecutive healthy probes that close a half-open breaker
	bad        int // consecutive unhealthy probes while closed
	good       int // consecutive healthy probes while half-open
	started    bool
}

// newBreaker returns a breaker that starts open and closes on its first
// healthy probe (a replica is not trusted before it has been probed).
func newBreaker(openAfter, closeAfter int) *breaker {
	if openAfter < 1 {
		openAfter = 1
	}
	if closeAfter < 1 {
		closeAfter = 1
	}
	return &breaker{state: BreakerOpen, openAfter: openAfter, closeAfter: closeAfter}
}

// observe feeds one observation and returns the state before and after it.
func (b *breaker) observe(o observation) (from, to BreakerState) {
	from = b.state
	if !b.started {
		// The first probe: trust a replica that is under the threshold at once
		// (no hysteresis at start-up), else apply the normal rules from open.
		b.started = true
		if !o.connError && !o.failed && !o.paused && !o.stalled && !o.overLag {
			b.state = BreakerClosed
			return from, b.state
		}
	}
	switch b.state {
	case BreakerClosed:
		switch {
		case o.connError || o.paused || o.stalled:
			b.open()
		case o.failed || o.overLag:
			b.bad++
			if b.bad >= b.openAfter {
				b.open()
			}
		default:
			b.bad = 0
		}
	case BreakerOpen:
		if o.healthy() {
			b.state, b.good = BreakerHalfOpen, 1
			if b.good >= b.closeAfter {
				b.close()
			}
		}
	case BreakerHalfOpen:
		if !o.healthy() {
			b.open()
			break
		}
		b.good++
		if b.good >= b.closeAfter {
			b.close()
		}
	}
	return from, b.state
}

// userConnError records a connection-class error seen by user traffic: it
// opens a closed breaker at once (the prober re-admits the replica).
func (b *breaker) userConnError() (from, to BreakerState) {
	from = b.state
	if b.state == BreakerClosed {
		b.open()
	}
	return from, b.state
}

// userTimeout records a user read that the replica did not answer within
// the replica read bound: like a probe that timed out, it counts toward
// openAfter consecutive failures of a closed breaker (one slow read on a
// busy machine does not open it; two in a row, with no healthy probe
// between, do).
func (b *breaker) userTimeout() (from, to BreakerState) {
	if b.state != BreakerClosed {
		return b.state, b.state
	}
	return b.observe(observation{failed: true})
}

func (b *breaker) open()  { b.state, b.bad, b.good = BreakerOpen, 0, 0 }
func (b *breaker) close() { b.state, b.bad, b.good = BreakerClosed, 0, 0 }
