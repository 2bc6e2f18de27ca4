// Package deploy holds the deployment files of this folder that the parley
// binary needs at run time: the alert rules, which the local stack's
// Prometheus (internal/stack) loads as deploy/prometheus.yml does.
package deploy

import _ "embed"

// AlertRules is deploy/alerts.yml.
//
//go:embed alerts.yml
var AlertRules []byte
