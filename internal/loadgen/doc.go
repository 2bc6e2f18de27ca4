// Package loadgen is Parley's load generator: an HTTP/1.1 client that times
// every request individually (also when pipelined), an open model (constant or
// ramping arrival rate, latency measured from the intended send time, as wrk2
// does) and a closed model (N keep-alive connections with optional
// pipelining, as autocannon and wrk do), stages that ramp connections or rate
// over time, built-in scenarios against Parley's HTTP API, SLO thresholds and
// text, JSON and self-contained HTML reports.
//
// The entry point is Run (alias RunScenario): it takes Options and returns a
// Report. Report.Passed is false when a threshold failed; Run returns an error
// only when the run itself could not be carried out.
package loadgen
