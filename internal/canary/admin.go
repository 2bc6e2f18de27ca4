package canary

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/parley-chat/parley/internal/chat"
)

// AdminClient changes and reads rollouts through a Parley instance's admin
// API (PUT/GET /admin/rollouts).
type AdminClient struct {
	Base  string // http://host:port
	Token string
	HTTP  *http.Client
}

// NewAdminClient returns a client of the instance at base.
func NewAdminClient(base, token string) *AdminClient {
	return &AdminClient{Base: strings.TrimRight(base, "/"), Token: token, HTTP: &http.Client{Timeout: 5 * time.Second}}
}

func (a *AdminClient) do(ctx context.Context, method, path string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.Base+path, rd)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+a.Token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return nil
}

// Get reads the endpoint's rollout.
func (a *AdminClient) Get(ctx context.Context, endpoint string) (chat.Rollout, error) {
	var body struct {
		Rollouts []chat.Rollout `json:"rollouts"`
	}
	if err := a.do(ctx, http.MethodGet, "/admin/rollouts", nil, &body); err != nil {
		return chat.Rollout{}, err
	}
	for _, r := range body.Rollouts {
		if r.Endpoint == endpoint {
			return r, nil
		}
	}
	return chat.Rollout{}, fmt.Errorf("GET /admin/rollouts: no endpoint %q", endpoint)
}

// Set changes the endpoint's rollout and checks the answer.
func (a *AdminClient) Set(ctx context.Context, endpoint string, u chat.RolloutUpdate) (chat.Rollout, error) {
	var r chat.Rollout
	if err := a.do(ctx, http.MethodPut, "/admin/rollouts/"+endpoint, u, &r); err != nil {
		return r, err
	}
	if u.Percent != nil && r.Percent != *u.Percent {
		return r, fmt.Errorf("PUT /admin/rollouts/%s: percent is %d after setting %d", endpoint, r.Percent, *u.Percent)
	}
	return r, nil
}
