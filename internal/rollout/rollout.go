// Package rollout holds Parley's per-endpoint runtime switches: for each read
// endpoint, the share of users (percent) served by the optimized path and what
// that path uses (the Redis cache, read replicas). The state lives in
// PostgreSQL (table rollouts, migration 0050); every instance polls it and
// applies a change within about a second. The read path asks Decide, which
// reads an atomic snapshot and never blocks or allocates. The switches and
// the endpoint names are chat's (chat.Rollout, chat.RolloutEndpoints).
package rollout

import "github.com/parley-chat/parley/internal/chat"

// endpointIndex maps an endpoint name to its slot in a snapshot (the order
// of chat.RolloutEndpoints).
func endpointIndex(endpoint string) (int, bool) {
	switch endpoint {
	case chat.EndpointMessageHistory:
		return 0, true
	case chat.EndpointConversationList:
		return 1, true
	case chat.EndpointUnreadCount:
		return 2, true
	}
	return 0, false
}

const numEndpoints = 3

// Decision is what one request of one user does.
type Decision struct {
	// Optimized: the user is in the endpoint's rollout percentage.
	Optimized bool
	// Cache and Replica: what the optimized path may use (both false on the
	// baseline path, which is the primary without cache).
	Cache   bool
	Replica bool
	// Cohort is chat.CohortOptimized or chat.CohortBaseline, for metric labels.
	Cohort string
}

var baseline = Decision{Cohort: chat.CohortBaseline}
