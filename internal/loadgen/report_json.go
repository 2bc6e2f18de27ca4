package loadgen

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
)

// WriteJSON writes the report as indented JSON. Per scenario it carries at
// least name, requests, errors, error_rate (0..1), rps, latency_ms{p50, p90,
// p95, p99, max}, connections{requested, established}, thresholds[{expr,
// ok}] and passed, plus offered_rps (open model) and capacity_rps
// (--find-max); the top level carries passed.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("encode JSON report: %w", err)
	}
	return nil
}

// WriteJSONFile writes the JSON report to path.
func (r *Report) WriteJSONFile(path string) error {
	return writeFile(path, r.WriteJSON)
}

func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create report: %w", err)
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write report %s: %w", path, err)
	}
	return nil
}
