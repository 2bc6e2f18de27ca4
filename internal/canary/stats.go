package canary

import (
	"math"
	"sort"
)

// MWResult is a Mann–Whitney U test of a canary series X against a
// baseline series Y.
type MWResult struct {
	U float64 `json:"u"` // U of X: the number of (x, y) pairs with x > y, ties counting ½
	// PGreater is the one-sided p-value of "X tends to be larger than Y"
	// (the canary is worse for error ratios and latencies).
	PGreater float64 `json:"p_greater"`
	// PTwoSided is the two-sided p-value.
	PTwoSided float64 `json:"p_two_sided"`
	Exact     bool    `json:"exact"` // exact distribution (no ties, small samples), else normal approximation
	N, M      int     `json:"-"`
}

// exactLimit bounds the sample sizes for which MannWhitney computes the
// exact null distribution (without ties); larger samples use the normal
// approximation with tie and continuity corrections, as SciPy's
// method="asymptotic" does.
const exactLimit = 30

// MannWhitney tests x against y. NaN values are dropped; with an empty
// sample the p-values are 1 (no evidence).
func MannWhitney(x, y []float64) MWResult {
	x, y = finite(x), finite(y)
	n, m := len(x), len(y)
	r := MWResult{N: n, M: m, PGreater: 1, PTwoSided: 1}
	if n == 0 || m == 0 {
		return r
	}
	type obs struct {
		v float64
		x bool
	}
	all := make([]obs, 0, n+m)
	for _, v := range x {
		all = append(all, obs{v, true})
	}
	for _, v := range y {
		all = append(all, obs{v, false})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].v < all[j].v })
	// Mid-ranks for ties; the tie term Σ(t³−t) for the variance.
	var rankSumX, tieTerm float64
	ties := false
	for i := 0; i < len(all); {
		j := i
		for j < len(all) && all[j].v == all[i].v {
			j++
		}
		t := float64(j - i)
		if t > 1 {
			ties = true
			tieTerm += t*t*t - t
		}
		mid := float64(i+j+1) / 2 // ranks i+1 … j
		for k := i; k < j; k++ {
			if all[k].x {
				rankSumX += mid
			}
		}
		i = j
	}
	nf, mf := float64(n), float64(m)
	r.U = rankSumX - nf*(nf+1)/2
	if !ties && n <= exactLimit && m <= exactLimit {
		r.Exact = true
		// U takes integer values here.
		u := int(math.Round(r.U))
		dist := mwExactCounts(n, m)
		var total, ge, le float64
		for k, c := range dist {
			total += c
			if k >= u {
				ge += c
			}
			if k <= u {
				le += c
			}
		}
		r.PGreater = ge / total
		r.PTwoSided = math.Min(1, 2*math.Min(ge, le)/total)
		return r
	}
	mu := nf * mf / 2
	N := nf + mf
	sigma := math.Sqrt(nf * mf / 12 * ((N + 1) - tieTerm/(N*(N-1))))
	if sigma == 0 {
		return r // every value equal: no evidence either way
	}
	// Continuity correction of ½ toward the mean.
	zg := (r.U - mu - 0.5) / sigma
	r.PGreater = normalSF(zg)
	zt := (math.Abs(r.U-mu) - 0.5) / sigma
	r.PTwoSided = math.Min(1, 2*normalSF(zt))
	return r
}

// mwExactCounts returns, for samples of sizes n and m without ties, the
// number of arrangements giving each value of U (0 … n·m).
func mwExactCounts(n, m int) []float64 {
	// f[i][j][u]: arrangements of i x's and j y's with U = u; built up by
	// placing the largest element: an x above j y's adds j.
	prev := make([][]float64, m+1) // i-1 layer
	for j := 0; j <= m; j++ {
		prev[j] = []float64{1} // i = 0: U = 0
	}
	for i := 1; i <= n; i++ {
		cur := make([][]float64, m+1)
		cur[0] = []float64{1}
		for j := 1; j <= m; j++ {
			size := i*j + 1
			c := make([]float64, size)
			for u, v := range prev[j] { // largest is an x: adds j
				c[u+j] += v
			}
			for u, v := range cur[j-1] { // largest is a y: adds 0
				c[u] += v
			}
			cur[j] = c
		}
		prev = cur
	}
	return prev[m]
}

// normalSF is the standard normal's survival function P(Z > z).
func normalSF(z float64) float64 { return 0.5 * math.Erfc(z/math.Sqrt2) }

func finite(v []float64) []float64 {
	out := make([]float64, 0, len(v))
	for _, x := range v {
		if !math.IsNaN(x) && !math.IsInf(x, 0) {
			out = append(out, x)
		}
	}
	return out
}

// PoissonRatioTest is the exact conditional test of "the canary's error
// rate is at most (1+maxIncrease) times the baseline's", for errC errors in
// nC canary requests and errB in nB baseline requests. Given e = errC+errB
// errors in all, errC is binomial(e, π) with π = (1+maxIncrease)·nC /
// ((1+maxIncrease)·nC + nB) under that hypothesis; the p-value is
// P(X ≥ errC). A small p-value means the canary's errors are more than the
// allowed increase can explain. Zero errors anywhere gives 1; so does an
// empty cohort (no evidence).
func PoissonRatioTest(errC, nC, errB, nB, maxIncrease float64) float64 {
	ec, eb := math.Round(errC), math.Round(errB)
	if ec <= 0 || nC <= 0 || nB <= 0 {
		return 1
	}
	if eb < 0 {
		eb = 0
	}
	k := 1 + maxIncrease
	pi := k * nC / (k*nC + nB)
	return binomialSF(int(ec), int(ec+eb), pi)
}

// binomialSF is P(X ≥ k) for X ~ binomial(n, p), summed in log space.
func binomialSF(k, n int, p float64) float64 {
	if k <= 0 {
		return 1
	}
	if k > n {
		return 0
	}
	if p >= 1 {
		return 1
	}
	if p <= 0 {
		return 0
	}
	lnN, _ := math.Lgamma(float64(n + 1))
	lp, lq := math.Log(p), math.Log1p(-p)
	var sum float64
	for i := k; i <= n; i++ {
		a, _ := math.Lgamma(float64(i + 1))
		b, _ := math.Lgamma(float64(n - i + 1))
		sum += math.Exp(lnN - a - b + float64(i)*lp + float64(n-i)*lq)
	}
	return math.Min(1, sum)
}

func mean(v []float64) float64 {
	v = finite(v)
	if len(v) == 0 {
		return math.NaN()
	}
	var s float64
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}
