package loadgen

import (
	"bytes"
	"fmt"
	"html"
	"html/template"
	"io"
	"math"
	"sort"
	"strings"
)

// WriteHTML writes the report as one self-contained HTML page: inline CSS
// and SVG, no script, no external reference of any kind (it opens offline
// and never phones out). Per scenario: the summary, the thresholds, latency
// percentiles and throughput over time with stage markers, errors over time
// and by class, connections and generator CPU.
func (r *Report) WriteHTML(w io.Writer) error {
	var buf bytes.Buffer
	if err := htmlTmpl.Execute(&buf, r); err != nil {
		return fmt.Errorf("render HTML report: %w", err)
	}
	// Belt and braces: the page must carry no URL, whatever a scenario name
	// or description says.
	out := strings.NewReplacer("http://", "http: //", "https://", "https: //").Replace(buf.String())
	_, err := io.WriteString(w, out)
	if err != nil {
		return fmt.Errorf("write HTML report: %w", err)
	}
	return nil
}

// WriteHTMLFile writes the HTML report to path.
func (r *Report) WriteHTMLFile(path string) error { return writeFile(path, r.WriteHTML) }

var htmlTmpl = template.Must(template.New("report").Funcs(template.FuncMap{
	"ms":      fmtMs,
	"pct":     func(f float64) string { return fmt.Sprintf("%.3g%%", 100*f) },
	"f1":      func(f float64) string { return fmt.Sprintf("%.1f", f) },
	"actual":  fmtActual,
	"charts":  scenarioCharts,
	"classes": sortedCounts,
	"deref":   func(f *float64) float64 { return *f },
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>parley load report</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:20px}h2{font-size:17px;margin-top:36px;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 10px;border:1px solid #ddd;text-align:right}
th{background:#eee}td.l,th.l{text-align:left}
.ok{color:#17803d;font-weight:bold}.fail{color:#c62828;font-weight:bold}
.warn{background:#fff3cd;border:1px solid #e0c36a;padding:6px 10px;margin:6px 0}
.chart{background:#fff;border:1px solid #ddd;margin:10px 0}
.muted{color:#666}
</style></head><body>
<h1>parley load — <span class="{{if .Passed}}ok{{else}}fail{{end}}">{{if .Passed}}PASSED{{else}}FAILED{{end}}</span></h1>
<p class="muted">target {{.Target}} · started {{.StartedAt.Format "2006-01-02 15:04:05 UTC"}} · generator GOMAXPROCS {{.Generator.GOMAXPROCS}}, open-files limit {{.Generator.OpenFilesLimit}}, seed {{.Generator.Seed}}</p>
{{range .Scenarios}}
<h2>{{.Name}} <span class="{{if .Passed}}ok{{else}}fail{{end}}">{{if .Passed}}passed{{else}}FAILED{{end}}</span></h2>
{{if .Description}}<p class="muted">{{.Description}}</p>{{end}}
<table>
<tr><th class="l">model</th><td class="l">{{.Model}}{{if eq .Model "open"}} (latency from the intended send time){{else}} (pipelining {{.Connections.Pipelining}}){{end}}</td></tr>
<tr><th class="l">duration</th><td class="l">{{f1 .DurationS}} s</td></tr>
<tr><th class="l">requests</th><td class="l">{{.Requests}} ({{f1 .RPS}} successful/s{{if .OfferedRPS}}, offered {{f1 (deref .OfferedRPS)}}/s{{end}})</td></tr>
{{if .CapacityRPS}}<tr><th class="l">capacity within SLOs</th><td class="l"><b>{{f1 (deref .CapacityRPS)}} req/s</b></td></tr>{{end}}
<tr><th class="l">errors</th><td class="l">{{.Errors}} ({{pct .ErrorRate}})</td></tr>
<tr><th class="l">latency</th><td class="l">p50 {{ms .LatencyMs.P50}} · p90 {{ms .LatencyMs.P90}} · p95 {{ms .LatencyMs.P95}} · p99 {{ms .LatencyMs.P99}} · max {{ms .LatencyMs.Max}}</td></tr>
{{with .ServiceTimeMs}}<tr><th class="l">service time</th><td class="l">p50 {{ms .P50}} · p90 {{ms .P90}} · p95 {{ms .P95}} · p99 {{ms .P99}} · max {{ms .Max}}</td></tr>{{end}}
{{with .SendLag}}<tr><th class="l">send lag</th><td class="l">p50 {{ms .P50}} · p99 {{ms .P99}} · max {{ms .Max}} · late {{.Late}} · dropped {{.Dropped}} of {{.Offered}} · scheduler p99 {{ms .SchedP99}}</td></tr>{{end}}
<tr><th class="l">connections</th><td class="l">requested {{.Connections.Requested}} · established {{.Connections.Established}} · failed dials {{.Connections.Failed}} · reconnects {{.Connections.Reconnects}}</td></tr>
<tr><th class="l">generator CPU</th><td class="l">{{f1 .GeneratorLoad.CPUPercent}}% of one core (busiest second {{f1 .GeneratorLoad.CPUPercentMax}}%), budget {{.GeneratorLoad.BudgetCores}} cores{{if .GeneratorLoad.Bound}} — <span class="fail">generator-bound</span>{{end}}</td></tr>
{{with .Setup}}<tr><th class="l">setup</th><td class="l">{{.Users}} users, {{.Conversations}} conversations, {{.Messages}} messages in {{f1 .Seconds}} s</td></tr>{{end}}
</table>
{{range .Warnings}}<div class="warn">⚠ {{.}}</div>{{end}}
{{if .Thresholds}}<table><tr><th class="l">threshold</th><th>actual</th><th class="l">result</th></tr>
{{range .Thresholds}}<tr><td class="l">{{.Expr}}{{if .Source}} <span class="muted">({{.Source}})</span>{{end}}</td><td>{{actual .}}</td><td class="l {{if .OK}}ok{{else}}fail{{end}}">{{if .OK}}ok{{else}}FAIL{{end}}</td></tr>
{{end}}</table>{{end}}
{{charts .}}
{{if .Operations}}<table><tr><th class="l">operation</th><th>requests</th><th>rps</th><th>errors</th><th>p50</th><th>p90</th><th>p95</th><th>p99</th><th>max</th></tr>
{{range .Operations}}<tr><td class="l">{{.Name}}</td><td>{{.Requests}}</td><td>{{f1 .RPS}}</td><td>{{.Errors}}</td><td>{{ms .LatencyMs.P50}}</td><td>{{ms .LatencyMs.P90}}</td><td>{{ms .LatencyMs.P95}}</td><td>{{ms .LatencyMs.P99}}</td><td>{{ms .LatencyMs.Max}}</td></tr>
{{end}}</table>{{end}}
{{if .Targets}}<table><tr><th class="l">target</th><th>connections</th><th>requests</th><th>rps</th><th>errors</th><th>p50</th><th>p90</th><th>p95</th><th>p99</th><th>max</th></tr>
{{range .Targets}}<tr><td class="l">{{.Target}}</td><td>{{.Connections}}</td><td>{{.Requests}}</td><td>{{f1 .RPS}}</td><td>{{.Errors}}</td><td>{{ms .LatencyMs.P50}}</td><td>{{ms .LatencyMs.P90}}</td><td>{{ms .LatencyMs.P95}}</td><td>{{ms .LatencyMs.P99}}</td><td>{{ms .LatencyMs.Max}}</td></tr>
{{end}}</table>{{end}}
{{if .ErrorsByClass}}<table><tr><th class="l">error class</th><th>count</th></tr>{{range classes .ErrorsByClass}}<tr><td class="l">{{.Name}}</td><td>{{.N}}</td></tr>{{end}}</table>{{end}}
{{if .StatusCodes}}<table><tr><th class="l">status</th><th>count</th></tr>{{range classes .StatusCodes}}<tr><td class="l">{{.Name}}</td><td>{{.N}}</td></tr>{{end}}</table>{{end}}
{{if .Steps}}<table><tr><th>offered req/s</th><th>served/s</th><th>p95</th><th>p99</th><th>errors</th><th class="l">result</th></tr>
{{range .Steps}}<tr><td>{{f1 .OfferedRPS}}</td><td>{{f1 .RPS}}</td><td>{{ms .P95}}</td><td>{{ms .P99}}</td><td>{{pct .ErrorRate}}</td><td class="l {{if .Passed}}ok{{else}}fail{{end}}">{{if .Passed}}pass{{else}}fail{{range .Failed}} {{.}}{{end}}{{end}}{{if .GeneratorBound}} (generator-bound){{end}}</td></tr>
{{end}}</table>{{end}}
{{end}}
</body></html>
`))

type namedCount struct {
	Name string
	N    int64
}

func sortedCounts(m map[string]int64) []namedCount {
	out := make([]namedCount, 0, len(m))
	for k, v := range m {
		out = append(out, namedCount{k, v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// series is one line of a chart.
type series struct {
	name  string
	color string
	ys    []float64
	dash  bool
}

// scenarioCharts draws the scenario's time series as inline SVG.
func scenarioCharts(s *ScenarioReport) template.HTML {
	if len(s.Timeline) == 0 {
		return ""
	}
	xs := make([]float64, len(s.Timeline))
	get := func(f func(Interval) float64) []float64 {
		out := make([]float64, len(s.Timeline))
		for i, iv := range s.Timeline {
			out[i] = f(iv)
		}
		return out
	}
	for i, iv := range s.Timeline {
		xs[i] = iv.T
	}
	var b strings.Builder
	lineChart(&b, "latency per second (ms)", xs, []series{
		{"p50", "#1f77b4", get(func(i Interval) float64 { return i.P50 }), false},
		{"p90", "#2ca02c", get(func(i Interval) float64 { return i.P90 }), false},
		{"p99", "#ff7f0e", get(func(i Interval) float64 { return i.P99 }), false},
		{"max", "#d62728", get(func(i Interval) float64 { return i.Max }), true},
	}, s.Stages)
	tp := []series{{"successful req/s", "#1f77b4", get(func(i Interval) float64 { return i.RPS }), false}}
	if s.Model == "open" {
		tp = append(tp, series{"offered req/s", "#7f7f7f", get(func(i Interval) float64 { return i.OfferedRPS }), true})
	}
	lineChart(&b, "throughput (req/s)", xs, tp, s.Stages)
	lineChart(&b, "errors per second", xs, []series{
		{"errors/s", "#d62728", get(func(i Interval) float64 { return float64(i.Errors) }), false},
	}, s.Stages)
	lineChart(&b, "connections established", xs, []series{
		{"connections", "#9467bd", get(func(i Interval) float64 { return float64(i.Connections) }), false},
	}, s.Stages)
	cpu := []series{{"generator cpu % of one core", "#8c564b", get(func(i Interval) float64 { return i.CPUPercent }), false}}
	if s.Model == "open" {
		cpu = append(cpu, series{"send lag p99 (ms)", "#17becf", get(func(i Interval) float64 { return i.SendLagP99 }), true})
	}
	lineChart(&b, "generator", xs, cpu, s.Stages)
	return template.HTML(b.String())
}

// lineChart appends one SVG line chart: x in seconds, y from 0 to a nice
// maximum, stage boundaries as dashed vertical lines, a hover title per
// second with every series' value.
func lineChart(b *strings.Builder, title string, xs []float64, ss []series, marks []StageMark) {
	const W, H, L, R, T, B = 900.0, 240.0, 60.0, 20.0, 28.0, 34.0
	pw, ph := W-L-R, H-T-B
	xmax := 1.0
	for _, x := range xs {
		xmax = math.Max(xmax, x)
	}
	for _, m := range marks {
		xmax = math.Max(xmax, m.End)
	}
	ymax := 0.0
	for _, s := range ss {
		for _, y := range s.ys {
			ymax = math.Max(ymax, y)
		}
	}
	ymax = niceCeil(ymax)
	px := func(x float64) float64 { return L + pw*x/xmax }
	py := func(y float64) float64 { return T + ph - ph*y/ymax }
	fmt.Fprintf(b, `<svg class="chart" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" role="img" aria-label="%s">`, W, H, W, H, html.EscapeString(title))
	fmt.Fprintf(b, `<text x="%.0f" y="18" font-size="13" font-weight="bold">%s</text>`, L, html.EscapeString(title))
	// Grid and axes.
	for i := 0; i <= 4; i++ {
		y := ymax * float64(i) / 4
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#eee"/>`, L, py(y), W-R, py(y))
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-size="11" text-anchor="end">%s</text>`, L-6, py(y)+4, fmtNum(y))
	}
	step := niceCeil(xmax / 8)
	for x := 0.0; x <= xmax+1e-9; x += step {
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-size="11" text-anchor="middle">%ss</text>`, px(x), H-B+16, fmtNum(x))
	}
	fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#999"/>`, L, T+ph, W-R, T+ph)
	fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#999"/>`, L, T, L, T+ph)
	// Stage markers.
	for i, m := range marks {
		if i > 0 {
			fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#555" stroke-dasharray="4 3"/>`, px(m.Start), T, px(m.Start), T+ph)
		}
		label := fmt.Sprintf("stage %d: %d conns", i+1, m.Connections)
		if m.Rate > 0 {
			label += fmt.Sprintf(", %s/s", fmtNum(m.Rate))
		}
		x, anchor := px(m.Start)+3, "start"
		if x > W-R-150 { // near the right edge: label to the left of the marker
			x, anchor = px(m.Start)-3, "end"
		}
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-size="10" fill="#555" text-anchor="%s">%s</text>`, x, T+10+float64(i%2)*11, anchor, html.EscapeString(label))
	}
	// Lines.
	for _, s := range ss {
		var pts strings.Builder
		for i, y := range s.ys {
			fmt.Fprintf(&pts, "%.1f,%.1f ", px(xs[i]), py(y))
		}
		dash := ""
		if s.dash {
			dash = ` stroke-dasharray="5 3"`
		}
		fmt.Fprintf(b, `<polyline fill="none" stroke="%s" stroke-width="1.6"%s points="%s"/>`, s.color, dash, strings.TrimSpace(pts.String()))
	}
	// Legend.
	lx := L + 260
	for _, s := range ss {
		fmt.Fprintf(b, `<rect x="%.1f" y="9" width="12" height="4" fill="%s"/><text x="%.1f" y="16" font-size="11">%s</text>`, lx, s.color, lx+16, html.EscapeString(s.name))
		lx += 30 + 7*float64(len(s.name))
	}
	// Hover titles, one band per interval.
	prev := 0.0
	for i, x := range xs {
		var t strings.Builder
		fmt.Fprintf(&t, "t=%ss", fmtNum(x))
		for _, s := range ss {
			fmt.Fprintf(&t, "\n%s: %s", s.name, fmtNum(s.ys[i]))
		}
		fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="transparent"><title>%s</title></rect>`,
			px(prev), T, math.Max(1, px(x)-px(prev)), ph, html.EscapeString(t.String()))
		prev = x
	}
	b.WriteString(`</svg>`)
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func fmtNum(v float64) string {
	switch {
	case v == math.Trunc(v) && math.Abs(v) < 1e9:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 1:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}
