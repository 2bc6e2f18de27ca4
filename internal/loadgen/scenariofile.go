package loadgen

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// A scenario file (YAML or JSON) holds one scenario or a list of them under
// "scenarios":
//
//	name: chatty-readers
//	mix: {history: 50, history_deep: 10, conversation_list: 20, unread: 10, send: 10}
//	connections: 2000
//	rate: 300            # requests per second (open model)
//	duration: 2m
//	stages:              # optional: ramps of connections and/or rate
//	  - {duration: 30s, connections: 2000, rate: 100}
//	  - {duration: 1m, rate: 600}
//	thresholds: ["p95<300ms", "send:p99<500ms", "error_rate<1%"]
//	data: {users: 200, conversations: 100, messages: 3000}
type fileScenario struct {
	Name        string             `json:"name" yaml:"name"`
	Description string             `json:"description" yaml:"description"`
	Mix         map[string]float64 `json:"mix" yaml:"mix"`
	Connections int                `json:"connections" yaml:"connections"`
	Pipelining  int                `json:"pipelining" yaml:"pipelining"`
	Rate        float64            `json:"rate" yaml:"rate"`
	Duration    fileDuration       `json:"duration" yaml:"duration"`
	Stages      []fileStage        `json:"stages" yaml:"stages"`
	Thresholds  []string           `json:"thresholds" yaml:"thresholds"`
	Data        *DataSize          `json:"data" yaml:"data"`
}

type fileStage struct {
	Duration    fileDuration `json:"duration" yaml:"duration"`
	Connections *int         `json:"connections" yaml:"connections"`
	Rate        *float64     `json:"rate" yaml:"rate"`
}

type scenarioFile struct {
	fileScenario `yaml:",inline"`
	Scenarios    []fileScenario `json:"scenarios" yaml:"scenarios"`
}

// fileDuration accepts "90s", "2m" or a number of seconds.
type fileDuration time.Duration

func (d *fileDuration) set(s string) error {
	s = strings.TrimSpace(s)
	if s == "" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		secs, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil || math.IsNaN(secs) || math.IsInf(secs, 0) || math.Abs(secs) > math.MaxInt64/float64(time.Second) {
			return fmt.Errorf("bad duration %q (want 90s, 2m or a number of seconds)", s)
		}
		v = time.Duration(secs * float64(time.Second))
	}
	if v < 0 {
		return fmt.Errorf("negative duration %q", s)
	}
	*d = fileDuration(v)
	return nil
}

func (d *fileDuration) UnmarshalYAML(n *yaml.Node) error { return d.set(n.Value) }

func (d *fileDuration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		return d.set(s)
	}
	return d.set(string(b))
}

// LoadScenarioFile reads the scenarios of a YAML or JSON file.
func LoadScenarioFile(path string) ([]Scenario, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read scenario file: %w", err)
	}
	return ParseScenarios(data)
}

// ParseScenarios parses scenario-file content (YAML or JSON).
func ParseScenarios(data []byte) ([]Scenario, error) {
	var f scenarioFile
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) > 0 && trimmed[0] == '{' {
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		dec.DisallowUnknownFields()
		// The embedded struct's fields and "scenarios" both live at the top.
		var raw struct {
			fileScenario
			Scenarios []fileScenario `json:"scenarios"`
		}
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("parse scenario file (JSON): %w", err)
		}
		f.fileScenario, f.Scenarios = raw.fileScenario, raw.Scenarios
	} else {
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&f); err != nil {
			return nil, fmt.Errorf("parse scenario file (YAML): %w", err)
		}
	}
	list := f.Scenarios
	if f.Name != "" || len(f.Mix) > 0 {
		list = append([]fileScenario{f.fileScenario}, list...)
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("scenario file: no scenario (want name and mix, or a scenarios list)")
	}
	builtin := BuiltinScenarios()
	seen := map[string]bool{}
	var out []Scenario
	for i, fs := range list {
		if fs.Name == "" {
			fs.Name = fmt.Sprintf("custom%d", i+1)
		}
		if seen[fs.Name] {
			return nil, fmt.Errorf("scenario file: duplicate scenario %q", fs.Name)
		}
		if _, clash := builtin[fs.Name]; clash || fs.Name == "all" {
			return nil, fmt.Errorf("scenario file: %q is a built-in scenario's name; choose another", fs.Name)
		}
		seen[fs.Name] = true
		if len(fs.Mix) == 0 {
			return nil, fmt.Errorf("scenario %s: no mix", fs.Name)
		}
		var total float64
		for op, w := range fs.Mix {
			if !knownOp(op) {
				return nil, fmt.Errorf("scenario %s: unknown operation %q (want one of %s)", fs.Name, op, strings.Join(KnownOps, ", "))
			}
			if w < 0 || math.IsNaN(w) || math.IsInf(w, 0) {
				return nil, fmt.Errorf("scenario %s: operation %s has weight %v; want a number of at least 0", fs.Name, op, w)
			}
			total += w
		}
		if total <= 0 || math.IsInf(total, 0) {
			return nil, fmt.Errorf("scenario %s: the mix has no operation with a positive weight", fs.Name)
		}
		if fs.Connections < 0 || fs.Pipelining < 0 || fs.Rate < 0 || math.IsNaN(fs.Rate) || math.IsInf(fs.Rate, 0) {
			return nil, fmt.Errorf("scenario %s: connections, pipelining and rate must be finite and at least 0", fs.Name)
		}
		for _, e := range fs.Thresholds {
			if _, err := ParseThreshold(e); err != nil {
				return nil, fmt.Errorf("scenario %s: %w", fs.Name, err)
			}
		}
		sc := Scenario{
			Name: fs.Name, Description: fs.Description, Mix: fs.Mix,
			Connections: fs.Connections, Pipelining: fs.Pipelining, Rate: fs.Rate,
			Duration: time.Duration(fs.Duration), Thresholds: fs.Thresholds, Data: defaultData,
		}
		if fs.Data != nil {
			sc.Data = *fs.Data
		}
		if sc.Connections <= 0 {
			sc.Connections = 100
		}
		if sc.Duration <= 0 && len(fs.Stages) == 0 {
			sc.Duration = time.Minute
		}
		for i, st := range fs.Stages {
			s := Stage{Duration: time.Duration(st.Duration), Connections: -1, Rate: -1}
			if st.Connections != nil {
				if *st.Connections < 0 {
					return nil, fmt.Errorf("scenario %s: stage %d: negative connections", fs.Name, i+1)
				}
				s.Connections = *st.Connections
			}
			if st.Rate != nil {
				if r := *st.Rate; r < 0 || math.IsNaN(r) || math.IsInf(r, 0) {
					return nil, fmt.Errorf("scenario %s: stage %d: rate %v; want a finite number of at least 0", fs.Name, i+1, r)
				}
				s.Rate = *st.Rate
			}
			sc.Stages = append(sc.Stages, s)
		}
		if len(sc.Stages) > 0 {
			if _, err := newProfile(sc.Stages, sc.Connections, sc.Rate); err != nil {
				return nil, fmt.Errorf("scenario %s: %w", fs.Name, err)
			}
		}
		if len(sc.Stages) > 0 {
			// Fill unset values of the first stage from the scenario.
			if sc.Stages[0].Connections < 0 {
				sc.Stages[0].Connections = sc.Connections
			}
			if sc.Stages[0].Rate < 0 {
				sc.Stages[0].Rate = sc.Rate
			}
			sc.Connections, sc.Rate = sc.Stages[0].Connections, sc.Stages[0].Rate
		}
		out = append(out, sc)
	}
	return out, nil
}
