package chat

import "slices"

// Rollout is one read endpoint's runtime switch (api.md /admin/rollouts):
// the share of users (Percent, 0–100) served by the optimized path, and what
// that path uses: the cache and/or read replicas. The others take the
// baseline path (the primary, no cache).
type Rollout struct {
	Endpoint string `json:"endpoint"`
	Percent  int    `json:"percent"`
	Cache    bool   `json:"cache"`
	Replica  bool   `json:"replica"`
}

// RolloutUpdate changes any subset of a Rollout; nil fields stay.
type RolloutUpdate struct {
	Percent *int  `json:"percent,omitempty"`
	Cache   *bool `json:"cache,omitempty"`
	Replica *bool `json:"replica,omitempty"`
}

// Empty reports an update that changes nothing.
func (u RolloutUpdate) Empty() bool { return u.Percent == nil && u.Cache == nil && u.Replica == nil }

// Validate is EINVALID for a field out of range.
func (u RolloutUpdate) Validate() error {
	if u.Percent != nil && (*u.Percent < 0 || *u.Percent > 100) {
		return Errorf(EINVALID, "percent must be 0..100, got %d", *u.Percent)
	}
	return nil
}

// RolloutEndpoints lists the endpoints with a rollout switch, in a fixed
// order (the {endpoint} of /admin/rollouts).
func RolloutEndpoints() []string {
	return []string{EndpointMessageHistory, EndpointConversationList, EndpointUnreadCount}
}

// CheckRolloutEndpoint is ENOTFOUND for an endpoint without a switch.
func CheckRolloutEndpoint(endpoint string) error {
	if !slices.Contains(RolloutEndpoints(), endpoint) {
		return Errorf(ENOTFOUND, "no rollout for endpoint %q; the endpoints are %v", endpoint, RolloutEndpoints())
	}
	return nil
}
