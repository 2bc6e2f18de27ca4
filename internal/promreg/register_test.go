package promreg

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRegister(t *testing.T) {
	reg := prometheus.NewRegistry()
	newVec := func(labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "parley_test_total", Help: "test"}, labels)
	}
	first := MustRegister(reg, newVec("a"))
	second := MustRegister(reg, newVec("a"))
	if first != second {
		t.Error("a second registration of the same metric did not share the first collector")
	}
	second.WithLabelValues("x").Inc()
	if _, err := Register(reg, newVec("b")); err == nil {
		t.Error("a conflicting definition (other labels) registered without error")
	}
	if c, err := Register(nil, newVec("a")); err != nil || c == nil {
		t.Errorf("nil registerer: %v, %v", c, err)
	}
	defer func() {
		if recover() == nil {
			t.Error("MustRegister did not panic on a conflict")
		}
	}()
	MustRegister(reg, newVec("c"))
}
