package canary

import (
	"math"
	"testing"
)

func TestMannWhitney(t *testing.T) {
	males := []float64{19, 22, 16, 29, 24}
	females := []float64{20, 11, 17, 12}
	for _, tc := range []struct {
		name        string
		x, y        []float64
		u           float64
		pGreater    float64
		pTwoSided   float64
		exact       bool
		tol         float64
		wantNoTests bool
	}{
		// SciPy's documented example: mannwhitneyu(males, females,
		// method="exact") → U=17, p=0.1111 (two-sided) = 2·7/126.
		{name: "scipy example, exact", x: males, y: females, u: 17, pGreater: 7.0 / 126, pTwoSided: 14.0 / 126, exact: true, tol: 1e-12},
		// Complete separation: P(U ≥ 9) = 1/C(6,3).
		{name: "separated, canary higher", x: []float64{4, 5, 6}, y: []float64{1, 2, 3}, u: 9, pGreater: 1.0 / 20, pTwoSided: 2.0 / 20, exact: true, tol: 1e-12},
		{name: "separated, canary lower", x: []float64{1, 2, 3}, y: []float64{4, 5, 6}, u: 0, pGreater: 1, pTwoSided: 2.0 / 20, exact: true, tol: 1e-12},
		// A tie (three 2s): the normal approximation with tie and continuity
		// corrections, by hand: U = 0.5·2 + 3 = 4, μ = 6,
		// σ² = 4·3/12·(8 − (3³−3)/(7·6)).
		{name: "ties use the normal approximation", x: []float64{1, 2, 2, 5}, y: []float64{2, 3, 4}, u: 4,
			pGreater:  normalSF((4 - 6 - 0.5) / math.Sqrt(4.0*3/12*(8-24.0/42))),
			pTwoSided: math.Min(1, 2*normalSF((2-0.5)/math.Sqrt(4.0*3/12*(8-24.0/42)))), tol: 1e-12},
		{name: "all equal: no evidence", x: []float64{0, 0, 0}, y: []float64{0, 0, 0, 0}, u: 6, pGreater: 1, pTwoSided: 1, tol: 0},
		{name: "NaN dropped, empty sample", x: []float64{math.NaN()}, y: []float64{1, 2}, u: 0, pGreater: 1, pTwoSided: 1, tol: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := MannWhitney(tc.x, tc.y)
			if r.U != tc.u || r.Exact != tc.exact {
				t.Fatalf("U=%v exact=%v, want U=%v exact=%v", r.U, r.Exact, tc.u, tc.exact)
			}
			if math.Abs(r.PGreater-tc.pGreater) > tc.tol || math.Abs(r.PTwoSided-tc.pTwoSided) > tc.tol {
				t.Errorf("p greater %.6f two-sided %.6f, want %.6f %.6f", r.PGreater, r.PTwoSided, tc.pGreater, tc.pTwoSided)
			}
		})
	}
}

// TestMannWhitneyAsymptotic checks the normal approximation against SciPy's
// documented value: mannwhitneyu(males, females, method="asymptotic") →
// p = 0.11134688653314041 (two-sided), and that it approaches the exact p for
// large samples.
func TestMannWhitneyAsymptotic(t *testing.T) {
	// 31 values against 30 forces the approximation (exactLimit 30).
	var x, y []float64
	for i := 0; i < 31; i++ {
		x = append(x, float64(2*i+1)) // odd
	}
	for i := 0; i < 30; i++ {
		y = append(y, float64(2*i)+0.5)
	}
	r := MannWhitney(x, y)
	if r.Exact {
		t.Fatal("31×30 used the exact distribution")
	}
	// Rank sum of x: x_i = 2i+1 is above y_0..y_i → U = Σ(i+1) capped at 30.
	wantU := 0.0
	for i := 0; i < 31; i++ {
		wantU += math.Min(float64(i+1), 30)
	}
	if r.U != wantU {
		t.Errorf("U = %v, want %v", r.U, wantU)
	}
	// Same scale as SciPy's example, by the same formula: z = (U − nm/2 − ½)/σ.
	mu, sigma := 31.0*30/2, math.Sqrt(31.0*30*62/12)
	if want := normalSF((wantU - mu - 0.5) / sigma); math.Abs(r.PGreater-want) > 1e-12 {
		t.Errorf("p greater %v, want %v", r.PGreater, want)
	}
	// SciPy's asymptotic example value (U=17 of 5×4, no ties, forced through
	// the same formula).
	z := (math.Abs(17-10.0) - 0.5) / math.Sqrt(5.0*4*10/12)
	if p := 2 * normalSF(z); math.Abs(p-0.11134688653314041) > 1e-12 {
		t.Errorf("asymptotic formula gives %v for SciPy's example, want 0.11134688653314041", p)
	}
}

func TestPoissonRatioTest(t *testing.T) {
	for _, tc := range []struct {
		name               string
		errC, nC, errB, nB float64
		inc                float64
		want               float64
		tol                float64
	}{
		{"no canary errors", 0, 1000, 5, 1000, 0.2, 1, 0},
		{"empty baseline cohort: no evidence", 3, 1000, 0, 0, 0.2, 1, 0},
		// Equal cohorts, no allowed increase: π = ½, P(X ≥ 10 | 10) = 2⁻¹⁰.
		{"all 10 errors in the canary", 10, 1000, 0, 1000, 0, 1.0 / 1024, 1e-15},
		// P(X ≥ 8 | 10, ½) = (45+10+1)/1024.
		{"8 of 10 errors in the canary", 8, 1000, 2, 1000, 0, 56.0 / 1024, 1e-15},
		// The allowed increase moves π: 1.2·100/(1.2·100+100) = 6/11.
		{"allowed +20%", 1, 100, 0, 100, 0.2, 6.0 / 11, 1e-15},
		// 0.1% vs 0.05% on 2000 requests each: 2 vs 1 error is no evidence.
		{"0.1% vs 0.05% is not significant", 2, 2000, 1, 2000, 0.2, 1 - math.Pow(5.0/11, 3) - 3*(6.0/11)*math.Pow(5.0/11, 2), 1e-12},
		// Fractional counts from increase() are rounded.
		{"rounded counts", 9.6, 1000, 0.4, 1000, 0, 1.0 / 1024, 1e-15},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := PoissonRatioTest(tc.errC, tc.nC, tc.errB, tc.nB, tc.inc)
			if math.Abs(got-tc.want) > tc.tol {
				t.Errorf("p = %v, want %v", got, tc.want)
			}
		})
	}
	// A clear regression: 5% vs 0.5% on 2000 requests each.
	if p := PoissonRatioTest(100, 2000, 10, 2000, 0.2); p > 1e-10 {
		t.Errorf("5%% vs 0.5%%: p = %v, want tiny", p)
	}
}
