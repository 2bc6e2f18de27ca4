// Package promreg is what Parley's components share about exporting
// Prometheus metrics: registration that tolerates a second instance of a
// component (two servers, caches or monitors on one registry, as in tests
// and in processes that run several) by sharing the collector already there.
package promreg

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Register registers c on reg, or returns the collector of the same type
// already registered with the same descriptor. A nil reg registers nothing
// and returns c (metrics not exported). Any other conflict (same name,
// different labels or help) is an error.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if reg == nil {
		return c, nil
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("register metric: %w", err)
	}
	return c, nil
}

// MustRegister is Register for collectors whose definitions are fixed in
// code, where a conflict is a programming error: it panics.
func MustRegister[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	c, err := Register(reg, c)
	if err != nil {
		panic(err)
	}
	return c
}
