package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// instanceSet is `parley dev --instances N` with N > 1: N `parley serve`
// processes of this binary on consecutive ports, sharing the local stack,
// each registered with the stack's Prometheus. Secrets (URLs, the admin
// token, the cursor key) go to them in their environment, never in their
// command lines; their output is copied to stderr, each line prefixed with
// the instance's name.
type instanceSet struct {
	exe     string
	c       serveConfig // the shared settings (HTTPAddr: the first instance's)
	logArgs []string    // --log-level, --log-format
	sdDir   string      // the stack's Prometheus targets folder
	addrs   []string
	cmds    []*exec.Cmd
	exited  chan instanceExit
	out     sync.Mutex // one line at a time on stderr
}

type instanceExit struct {
	i   int
	err error
}

// instanceAddrs are n consecutive listen addresses from base's port; each
// must be free now.
func instanceAddrs(base string, n int) ([]string, error) {
	host, portText, err := net.SplitHostPort(base)
	if err != nil {
		return nil, fmt.Errorf("%w: --http-addr %q: %v", errUsage, base, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil || port <= 0 {
		return nil, fmt.Errorf("%w: --instances %d needs a fixed --http-addr port (the instances listen on it and the next %d), not %q", errUsage, n, n-1, portText)
	}
	if port+n-1 > 65535 {
		return nil, fmt.Errorf("%w: --http-addr port %d + %d instances passes 65535", errUsage, port, n)
	}
	addrs := make([]string, n)
	for i := range n {
		addrs[i] = net.JoinHostPort(host, strconv.Itoa(port+i))
		ln, err := net.Listen("tcp", addrs[i])
		if err != nil {
			return nil, fmt.Errorf("instance %d would listen on %s: %w (pick another --http-addr)", i+1, addrs[i], err)
		}
		ln.Close()
	}
	return addrs, nil
}

// serveArgs are the flags of instance i: its address and Prometheus file,
// and every shared setting that is not a secret.
func (s *instanceSet) serveArgs(i int) []string {
	c := s.c
	args := []string{"serve",
		"--http-addr", s.addrs[i],
		"--prometheus-sd-file", filepath.Join(s.sdDir, fmt.Sprintf("dev-%d-%d.json", os.Getpid(), i+1)),
		"--primary-exec-mode", c.PrimaryExecMode,
		"--replica-exec-mode", c.ReplicaExecMode,
		"--primary-pool-size", strconv.Itoa(c.PrimaryPoolConns),
		"--replica-pool-size", strconv.Itoa(c.ReplicaPoolConns),
		"--max-replica-lag", c.MaxReplicaLag.String(),
		"--replica-wait", c.ReplicaWait.String(),
		"--acquire-timeout", c.AcquireTimeout.String(),
		"--request-timeout", c.RequestTimeout.String(),
		"--shutdown-timeout", c.ShutdownTimeout.String(),
		"--access-log-sample", strconv.FormatFloat(c.AccessLogShare, 'g', -1, 64),
	}
	if c.CachePrefix != "" {
		args = append(args, "--cache-prefix", c.CachePrefix)
	}
	return append(args, s.logArgs...)
}

// serveEnv is the instances' environment: this process's, then the
// connections and secrets (the last value of a name wins).
func (s *instanceSet) serveEnv() []string {
	c := s.c
	env := append(os.Environ(),
		"PARLEY_PRIMARY_URL="+c.PrimaryURL,
		"PARLEY_REPLICA_URLS="+strings.Join(c.ReplicaURLs, ","),
		"PARLEY_REDIS_URL="+c.RedisURL,
		"PARLEY_PGBOUNCER_ADMIN_URL="+c.PgBouncerAdminURL,
		"PARLEY_ADMIN_TOKEN="+c.AdminToken,
	)
	if c.CursorKey != "" {
		env = append(env, "PARLEY_CURSOR_KEY="+c.CursorKey)
	}
	return env
}

// start starts every instance; Stop (or the end of ctx) stops them.
func (s *instanceSet) start() error {
	s.exited = make(chan instanceExit, len(s.addrs))
	for i := range s.addrs {
		cmd := exec.Command(s.exe, s.serveArgs(i)...)
		cmd.Env = s.serveEnv()
		// Their own process group: the terminal's Ctrl-C reaches this
		// process, which stops them in order (SIGTERM, then waits).
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		cmd.Stderr = cmd.Stdout
		if err := cmd.Start(); err != nil {
			s.stop()
			return fmt.Errorf("start instance %d: %w", i+1, err)
		}
		s.cmds = append(s.cmds, cmd)
		fmt.Fprintf(os.Stderr, "api%d: parley serve on %s (pid %d)\n", i+1, s.addrs[i], cmd.Process.Pid)
		copied := make(chan struct{})
		go func() {
			defer close(copied)
			s.copyLines(fmt.Sprintf("api%d | ", i+1), stdout)
		}()
		go func() {
			<-copied // Wait closes the pipe: read it all first
			s.exited <- instanceExit{i: i, err: cmd.Wait()}
		}()
	}
	return nil
}

func (s *instanceSet) copyLines(prefix string, r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		s.out.Lock()
		fmt.Fprintln(os.Stderr, prefix+sc.Text())
		s.out.Unlock()
	}
}

// waitReady waits until every instance answers GET /readyz, or one exits.
func (s *instanceSet) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hc := &http.Client{Timeout: 2 * time.Second}
	for i, addr := range s.addrs {
		for {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
			if resp, err := hc.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			select {
			case ex := <-s.exited:
				s.exited <- ex // for run's loop
				return fmt.Errorf("instance %d exited before it was ready: %v", ex.i+1, ex.err)
			case <-ctx.Done():
				return fmt.Errorf("instance %d on %s not ready after %v", i+1, addr, timeout)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// wait blocks until ctx ends (nil: a clean stop follows) or an instance
// exits on its own (its error).
func (s *instanceSet) wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case ex := <-s.exited:
		s.exited <- ex
		if ex.err == nil {
			ex.err = errors.New("exit status 0")
		}
		return fmt.Errorf("instance %d (%s) exited: %v; stopping the others", ex.i+1, s.addrs[ex.i], ex.err)
	}
}

// stop sends SIGTERM to every instance still running and waits for all of
// them (SIGKILL after their shutdown timeout and 5 s more).
func (s *instanceSet) stop() {
	for _, cmd := range s.cmds {
		_ = cmd.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.After(s.c.ShutdownTimeout + 5*time.Second)
	for done := 0; done < len(s.cmds); {
		select {
		case ex := <-s.exited:
			done++
			if ex.err != nil && !isSignalExit(ex.err) {
				fmt.Fprintf(os.Stderr, "api%d: %v\n", ex.i+1, ex.err)
			}
		case <-deadline:
			for _, cmd := range s.cmds {
				_ = cmd.Process.Kill()
			}
			deadline = nil // killed: their exits follow
		}
	}
}

func isSignalExit(err error) bool {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return true
		}
	}
	return false
}
