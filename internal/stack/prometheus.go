package stack

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/parley-chat/parley/deploy"
)

// ---- Prometheus ----
//
// The stack's Prometheus scrapes every parley server of the data dir: each
// registers itself with a file in TargetsDir (file-based service discovery;
// `parley dev` does it, `parley serve --prometheus-sd-file` too) and
// Prometheus picks it up within a second or two. It loads the alert rules of
// deploy/alerts.yml and keeps two days of data.

// ScrapeInterval is how often the stack's Prometheus scrapes and how fresh
// a query's newest sample is: short, so that a canary judged on a local
// stack sees a change within seconds.
const ScrapeInterval = time.Second

func (s *Stack) prometheusDir() string { return filepath.Join(s.Dir, "prometheus") }
func (s *Stack) prometheusPIDFile() string {
	return filepath.Join(s.prometheusDir(), "prometheus.pid")
}

// TargetsDir is where parley servers register themselves with the stack's
// Prometheus: one JSON file each (WriteTargetFile), removed when they stop.
func (s *Stack) TargetsDir() string { return filepath.Join(s.prometheusDir(), "targets") }

// PrometheusURL is the stack's Prometheus (HTTP API and UI).
func (s *Stack) PrometheusURL() string {
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(s.State.PrometheusPort))
}

func (s *Stack) prometheusConfig() string {
	d := s.prometheusDir()
	return fmt.Sprintf(`# Written by parley stack; rewritten on every 'up' (then reloaded).
# Scrapes every parley server registered in %[1]s; the rules are deploy/alerts.yml.
global:
  scrape_interval: %[2]s
  scrape_timeout: %[2]s
  evaluation_interval: 5s
  external_labels:
    service: parley
    env: local

rule_files:
  - %[3]s

scrape_configs:
  - job_name: parley
    metrics_path: /metrics
    file_sd_configs:
      - files: ["%[1]s/*.json"]
        refresh_interval: 2s
`, s.TargetsDir(), ScrapeInterval, filepath.Join(d, "alerts.yml"))
}

func (s *Stack) prometheusRunning() bool {
	return alive(readPID(s.prometheusPIDFile()), "prometheus")
}

func (s *Stack) upPrometheus(ctx context.Context) error {
	d := s.prometheusDir()
	for _, dir := range []string{d, filepath.Join(d, "data")} {
		if err := s.acct.mkdir(dir, 0o700); err != nil {
			return err
		}
	}
	// Servers running as other users of the machine register here too.
	if err := s.acct.mkdir(s.TargetsDir(), 0o755); err != nil {
		return err
	}
	// Prometheus must traverse the data dir's prometheus folder only.
	if err := os.Chmod(d, 0o755); err != nil {
		return err
	}
	if err := s.acct.writeFile(filepath.Join(d, "alerts.yml"), deploy.AlertRules, 0o644); err != nil {
		return err
	}
	conf := filepath.Join(d, "prometheus.yml")
	if err := s.acct.writeFile(conf, []byte(s.prometheusConfig()), 0o644); err != nil {
		return err
	}
	if pid := readPID(s.prometheusPIDFile()); alive(pid, "prometheus") {
		// Running: reload the rewritten configuration.
		_ = syscall.Kill(pid, syscall.SIGHUP)
	} else {
		if !portFree(s.State.PrometheusPort) {
			return fmt.Errorf("port %d is taken by another program; pick another with --prometheus-port or free it", s.State.PrometheusPort)
		}
		if err := s.startPrometheus(conf); err != nil {
			return err
		}
	}
	return waitPrometheusReady(ctx, s.PrometheusURL(), 30*time.Second)
}

// startPrometheus starts the server in the background, in its own session,
// as the daemons' account. Prometheus does not daemonize itself: its output
// goes to log/prometheus.log and its pid to prometheus.pid.
func (s *Stack) startPrometheus(conf string) error {
	logPath := filepath.Join(s.logDir(), "prometheus.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	if err := s.acct.own(logPath); err != nil {
		return err
	}
	// Not bound to ctx: the daemon outlives this command, like the others.
	cmd := s.acct.command(context.Background(), s.bin.Prometheus,
		"--config.file="+conf,
		"--storage.tsdb.path="+filepath.Join(s.prometheusDir(), "data"),
		"--storage.tsdb.retention.time=2d",
		"--web.listen-address="+net.JoinHostPort("127.0.0.1", strconv.Itoa(s.State.PrometheusPort)),
		"--web.enable-lifecycle",
		"--log.level=warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start prometheus: %w", err)
	}
	go func() { _ = cmd.Wait() }() // reap it if it dies while this process runs
	return os.WriteFile(s.prometheusPIDFile(), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)
}

func waitPrometheusReady(ctx context.Context, base string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := prometheusReady(ctx, base)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("prometheus not ready after %v: %w", timeout, err)
		}
		if err := ctxSleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

func prometheusReady(ctx context.Context, base string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/-/ready", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/-/ready: HTTP %d", resp.StatusCode)
	}
	return nil
}

// prometheusTargets counts the active scrape targets and those up.
func prometheusTargets(ctx context.Context, base string) (up, total int, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/targets?state=active", nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	var body struct {
		Data struct {
			ActiveTargets []struct {
				Health string `json:"health"`
			} `json:"activeTargets"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return 0, 0, err
	}
	for _, t := range body.Data.ActiveTargets {
		if t.Health == "up" {
			up++
		}
	}
	return up, len(body.Data.ActiveTargets), nil
}

// WriteTargetFile registers the parley server at addr (host:port of its
// /metrics) with a Prometheus that reads file-based service discovery from
// path's folder: it writes path atomically (a temporary file renamed), with
// the given extra labels on every series scraped from it. A wildcard listen
// address (":8080", "0.0.0.0:8080") is registered as 127.0.0.1.
func WriteTargetFile(path, addr string, labels map[string]string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("prometheus target %q: %w", addr, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	if labels == nil {
		labels = map[string]string{}
	}
	b, err := json.MarshalIndent([]map[string]any{{
		"targets": []string{net.JoinHostPort(host, port)},
		"labels":  labels,
	}}, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("prometheus target file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("prometheus target file: %w", err)
	}
	return nil
}

// RegisterTarget registers the server at addr with the stack's Prometheus
// under name (a file name without extension) and returns the function that
// removes it again.
func (s *Stack) RegisterTarget(name, addr string, labels map[string]string) (remove func(), err error) {
	if strings.ContainsAny(name, `/\`) || name == "" {
		return nil, fmt.Errorf("prometheus target name %q: want a plain file name", name)
	}
	path := filepath.Join(s.TargetsDir(), name+".json")
	if err := WriteTargetFile(path, addr, labels); err != nil {
		return nil, err
	}
	return func() { _ = os.Remove(path) }, nil
}
