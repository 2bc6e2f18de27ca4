package loadgen

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// A user creation answered 503 after the row was made (the server could not
// confirm the commit): the retry finds the handle taken. The setup uses a
// new handle and gets a user with a token, instead of failing the run.
func TestCreateUserAfterUnconfirmedWrite(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	made := map[string]bool{}
	var handles []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Handle string `json:"handle"`
		}
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil || r.URL.Path != "/v1/users" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		handles = append(handles, in.Handle)
		switch {
		case made[in.Handle]:
			w.WriteHeader(http.StatusConflict)
			_, _ = w.Write([]byte(`{"error":{"code":"conflict","message":"the handle is taken"}}`))
		case len(made) == 0: // the first user is made, its answer lost
			made[in.Handle] = true
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"error":{"code":"unavailable","message":"the database did not confirm the write"}}`))
		default:
			made[in.Handle] = true
			w.WriteHeader(http.StatusCreated)
			_, _ = w.Write([]byte(`{"id":"7","handle":"` + in.Handle + `","token":"plt_x"}`))
		}
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	u, err := createUser(ctx, newAPIClient(srv.URL, "adm", 5*time.Second), "run1", 3)
	if err != nil {
		t.Fatalf("createUser: %v (requests %v)", err, handles)
	}
	if u.id != "7" || u.token != "plt_x" {
		t.Errorf("user %+v", u)
	}
	want := []string{"lg_run1_3", "lg_run1_3", "lg_run1_3_1"}
	if strings.Join(handles, " ") != strings.Join(want, " ") {
		t.Errorf("handles tried %v, want %v", handles, want)
	}
}
