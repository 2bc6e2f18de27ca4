//go:build scale

package scale

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/parley-chat/parley/internal/cache"
	"github.com/parley-chat/parley/internal/stack"
	"github.com/parley-chat/parley/internal/stack/stacktest"
)

// TestTopologyCommands drives the binary on this package's stack (two
// replicas, a Redis Cluster): `parley stack status` lists every replica and
// cluster node, `parley stack env` names both replicas and a Redis URL that
// cache.NewClient opens as a cluster client; `parley dev --instances 2`
// runs two `parley serve` processes on consecutive ports, both on both
// replicas and the cluster, each scraped by the stack's Prometheus;
// `parley load` spreads a scenario over both and reports each; Ctrl-C stops
// both instances and leaves the stack (--keep-stack) running.
func TestTopologyCommands(t *testing.T) {
	s := stacktest.ForTest(t)
	bin := stacktest.BuildParley(t, t.TempDir())
	dir := s.Dir
	run := func(args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "PARLEY_LOG_LEVEL=warn")
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return string(out), code
	}

	out, code := run("stack", "status", "--data-dir", dir)
	t.Logf("parley stack status:\n%s", out)
	if code != 0 {
		t.Fatalf("stack status exited %d", code)
	}
	for _, want := range []string{"replica ", "replica2 ", "redis1 ", "redis2 ", "redis3 "} {
		if !strings.Contains(out, "\n"+want) {
			t.Errorf("stack status has no %q line", want)
		}
	}
	if n := strings.Count(out, "cluster ok, 16384/16384 slots ok, 3 nodes"); n != 3 {
		t.Errorf("%d cluster nodes report the whole cluster serving, want 3", n)
	}
	if n := strings.Count(out, "wal receiver: streaming"); n != 2 {
		t.Errorf("%d replicas streaming, want 2", n)
	}

	out, code = run("stack", "env", "--data-dir", dir)
	if code != 0 {
		t.Fatalf("stack env exited %d: %s", code, out)
	}
	env := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		env[k] = strings.Trim(v, "'")
	}
	if urls := strings.Split(env["PARLEY_REPLICA_URLS"], ","); len(urls) != 2 || urls[0] != s.ReplicaURL() {
		t.Errorf("PARLEY_REPLICA_URLS has %d URLs, want both replicas, the first PARLEY_REPLICA_URL", len(urls))
	}
	rc, err := cache.NewClient(env["PARLEY_REDIS_URL"])
	if err != nil {
		t.Fatalf("PARLEY_REDIS_URL %q: %v", env["PARLEY_REDIS_URL"], err)
	}
	defer rc.Close()
	cc, ok := rc.(*redis.ClusterClient)
	if !ok {
		t.Fatalf("PARLEY_REDIS_URL %q opens a %T, want a cluster client", env["PARLEY_REDIS_URL"], rc)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return c.Ping(ctx).Err() }); err != nil {
		t.Fatalf("PING every primary: %v", err)
	}

	// parley dev --instances 2, on two consecutive free ports.
	port := consecutiveFreePorts(t, 2)
	addrs := []string{fmt.Sprintf("127.0.0.1:%d", port), fmt.Sprintf("127.0.0.1:%d", port+1)}
	var devOut stacktest.LogBuffer
	dev := exec.Command(bin, "dev", "--data-dir", dir, "--keep-stack", "--instances", "2", "--http-addr", addrs[0], "--access-log-sample", "0")
	// Admission control off: this test is about the topology, and on a
	// machine shared with other test runs the adaptive limit, shrunk by
	// slow writes, shed the load's set-up sends for its whole retry budget
	// (seen: 503 overloaded). test/load and the overload runs test it.
	dev.Env = append(os.Environ(), "PARLEY_ADMIN_TOKEN="+adminToken, "PARLEY_LOG_LEVEL=info", "PARLEY_ADMISSION=false")
	dev.Stdout, dev.Stderr = &devOut, &devOut
	if err := dev.Start(); err != nil {
		t.Fatal(err)
	}
	devDone := make(chan error, 1)
	go func() { devDone <- dev.Wait() }()
	t.Cleanup(func() {
		if dev.ProcessState == nil {
			_ = dev.Process.Signal(syscall.SIGINT)
			select {
			case <-devDone:
			case <-time.After(30 * time.Second):
				_ = dev.Process.Kill()
			}
		}
		if t.Failed() {
			t.Logf("parley dev's output:\n%s", devOut.String())
		}
	})
	hc := &http.Client{Timeout: 5 * time.Second}
	stacktest.WaitFor(t, 90*time.Second, "both instances ready", func() bool {
		for _, a := range addrs {
			resp, err := hc.Get("http://" + a + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				return false
			}
		}
		return true
	})
	clients := []*stacktest.Client{stacktest.NewClient(t, "http://"+addrs[0], adminToken), stacktest.NewClient(t, "http://"+addrs[1], adminToken)}
	for i, c := range clients {
		var st struct {
			Replicas []struct{ Name, Breaker string } `json:"replicas"`
			Cache    struct{ State string }           `json:"cache"`
		}
		c.Must(200, c.Do("GET", "/admin/status", adminToken, nil)).Decode(t, &st)
		if len(st.Replicas) != 2 || st.Cache.State != "up" {
			t.Errorf("instance %d: /admin/status replicas %+v, cache %q; want 2 replicas and the cache up", i+1, st.Replicas, st.Cache.State)
		}
	}
	// Written through one, read through the other.
	u := clients[0].CreateUser()
	clients[1].Must(200, clients[1].Do("GET", "/v1/me", u.Token, nil))

	// Each instance is a target of the stack's Prometheus.
	took := stacktest.WaitFor(t, 30*time.Second, "Prometheus scraping both instances", func() bool {
		up := promTargetsUp(t, s.PrometheusURL())
		return up[addrs[0]] && up[addrs[1]]
	})
	t.Logf("both instances scraped by the stack's Prometheus %v after they were ready", took.Round(time.Millisecond))

	// parley load over both.
	report := filepath.Join(t.TempDir(), "load.json")
	out, code = run("load", "--target", "http://"+addrs[0]+",http://"+addrs[1], "--admin-token", adminToken,
		"--scenario", "history", "--scale", "0.01", "--connections", "8", "--rate", "40", "--duration", "2s",
		"--no-default-thresholds", "--threshold", "error_rate<0.1%", "--quiet", "--json", report)
	if code != 0 {
		t.Fatalf("parley load over both instances exited %d:\n%s", code, out)
	}
	var rep struct {
		Scenarios []struct {
			Requests int64 `json:"requests"`
			Targets  []struct {
				Target      string `json:"target"`
				Connections int64  `json:"connections"`
				Requests    int64  `json:"requests"`
				Errors      int64  `json:"errors"`
			} `json:"targets"`
		} `json:"scenarios"`
	}
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	sr := rep.Scenarios[0]
	if len(sr.Targets) != 2 || sr.Targets[0].Target != addrs[0] || sr.Targets[1].Target != addrs[1] ||
		sr.Targets[0].Requests == 0 || sr.Targets[1].Requests == 0 || sr.Targets[0].Requests+sr.Targets[1].Requests != sr.Requests ||
		sr.Targets[0].Connections != 4 || sr.Targets[1].Connections != 4 {
		t.Errorf("load report per target: %+v (total %d requests)", sr.Targets, sr.Requests)
	}

	// Ctrl-C: both instances stop, their Prometheus files go, the stack stays.
	if err := dev.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-devDone:
		if err != nil {
			t.Errorf("parley dev after Ctrl-C: %v", err)
		}
	case <-time.After(45 * time.Second):
		t.Fatal("parley dev did not stop within 45 s of Ctrl-C")
	}
	for _, a := range addrs {
		if c, err := net.DialTimeout("tcp", a, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after Ctrl-C", a)
		}
	}
	left, _ := filepath.Glob(filepath.Join(s.TargetsDir(), fmt.Sprintf("dev-%d-*.json", dev.Process.Pid)))
	if len(left) > 0 {
		t.Errorf("Prometheus target files left after Ctrl-C: %v", left)
	}
	if sts := s.Status(ctx); !stack.Healthy(sts) {
		t.Errorf("the stack after parley dev --keep-stack stopped: %+v", sts)
	}
	// Each instance's own log comes through dev's output under its prefix:
	// its "serving" line at start and its "stopped" line after Ctrl-C (info
	// level, the access log off), whatever else happened or did not.
	for i := range addrs {
		for _, msg := range []string{"msg=serving", "msg=stopped"} {
			if !containsLine(devOut.String(), fmt.Sprintf("api%d | ", i+1), msg) {
				t.Errorf("no line prefixed api%d | with %s in dev's output:\n%s", i+1, msg, devOut.String())
			}
		}
	}
}

// consecutiveFreePorts returns the first of n consecutive ports that were
// free a moment ago.
func consecutiveFreePorts(t *testing.T, n int) int {
	t.Helper()
	for try := 0; try < 50; try++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		first := ln.Addr().(*net.TCPAddr).Port
		ls := []net.Listener{ln}
		ok := true
		for i := 1; i < n && ok; i++ {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", first+i))
			if err != nil {
				ok = false
				break
			}
			ls = append(ls, l)
		}
		for _, l := range ls {
			l.Close()
		}
		if ok {
			return first
		}
	}
	t.Fatalf("no %d consecutive free ports", n)
	return 0
}

// promTargetsUp is the stack Prometheus's active targets that are up, by
// address.
func promTargetsUp(t *testing.T, base string) map[string]bool {
	t.Helper()
	resp, err := http.Get(base + "/api/v1/targets?state=active")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var body struct {
		Data struct {
			ActiveTargets []struct {
				Labels map[string]string `json:"labels"`
				Health string            `json:"health"`
			} `json:"activeTargets"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil
	}
	out := map[string]bool{}
	for _, a := range body.Data.ActiveTargets {
		if a.Health == "up" {
			out[a.Labels["instance"]] = true
		}
	}
	return out
}

// containsLine reports whether out has a line that starts with prefix and
// contains sub.
func containsLine(out, prefix, sub string) bool {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, prefix) && strings.Contains(l, sub) {
			return true
		}
	}
	return false
}
