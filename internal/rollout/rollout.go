// Package rollout holds Parley's per-endpoint runtime switches: for each read
// endpoint, the share of users (percent) served by the optimized path and what
// that path uses (the Redis cache, read replicas). The state lives in
// PostgreSQL (table rollouts, migration 0050); every instance polls it and
// applies a change within about a second. Request handlers ask Decide, which
// reads an atomic snapshot and never blocks or allocates.
package rollout

import (
	"errors"
	"fmt"
)

// The endpoints with a rollout switch (the {endpoint} of /admin/rollouts).
const (
	MessageHistory   = "message_history"
	ConversationList = "conversation_list"
	UnreadCount      = "unread_count"
)

// Endpoints lists every endpoint with a switch, in a fixed order.
func Endpoints() []string { return []string{MessageHistory, ConversationList, UnreadCount} }

const numEndpoints = 3

// endpointIndex maps an endpoint name to its slot in a snapshot.
func endpointIndex(endpoint string) (int, bool) {
	switch endpoint {
	case MessageHistory:
		return 0, true
	case ConversationList:
		return 1, true
	case UnreadCount:
		return 2, true
	}
	return 0, false
}

// Cohort labels for metrics (cohort="optimized|baseline").
const (
	CohortOptimized = "optimized"
	CohortBaseline  = "baseline"
)

var (
	// ErrUnknownEndpoint: the endpoint has no rollout switch (HTTP 404).
	ErrUnknownEndpoint = errors.New("unknown rollout endpoint")
	// ErrInvalid: an update is out of range (HTTP 400 invalid_argument).
	ErrInvalid = errors.New("invalid rollout update")
)

// State is one endpoint's switch, as stored and as served by the admin API.
type State struct {
	Endpoint string `json:"endpoint"`
	Percent  int    `json:"percent"`
	Cache    bool   `json:"cache"`
	Replica  bool   `json:"replica"`
}

// Update changes any subset of an endpoint's switch; nil fields stay.
type Update struct {
	Percent *int  `json:"percent,omitempty"`
	Cache   *bool `json:"cache,omitempty"`
	Replica *bool `json:"replica,omitempty"`
}

// Validate reports an out-of-range field, wrapping ErrInvalid.
func (u Update) Validate() error {
	if u.Percent != nil && (*u.Percent < 0 || *u.Percent > 100) {
		return fmt.Errorf("%w: percent must be 0..100, got %d", ErrInvalid, *u.Percent)
	}
	return nil
}

// Decision is what one request of one user does.
type Decision struct {
	// Optimized: the user is in the endpoint's rollout percentage.
	Optimized bool
	// Cache and Replica: what the optimized path may use (both false on the
	// baseline path, which is the primary without cache).
	Cache   bool
	Replica bool
	// Cohort is CohortOptimized or CohortBaseline, for metric labels.
	Cohort string
}

var baseline = Decision{Cohort: CohortBaseline}
