package stack

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"
)

// ComponentStatus is the state of one component.
type ComponentStatus struct {
	Name    string `json:"name"`
	Running bool   `json:"running"`
	PID     int    `json:"pid,omitempty"`
	Port    int    `json:"port"`
	Detail  string `json:"detail"`
}

// Status inspects every component without changing anything.
func (s *Stack) Status(ctx context.Context) []ComponentStatus {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out := []ComponentStatus{
		s.pgStatus(ctx, "primary", s.primaryDir(), s.State.PrimaryPort, s.SuperuserURL("postgres"),
			`SELECT CASE WHEN pg_is_in_recovery() THEN 'in recovery (not a primary!)' ELSE 'accepting writes' END`),
	}
	for i, port := range s.State.ReplicaPorts {
		out = append(out, s.pgStatus(ctx, replicaName(i), s.replicaDirAt(i), port, s.replicaSuperuserURL(i, "postgres"),
			`SELECT CASE WHEN NOT pg_is_in_recovery() THEN 'not in recovery (promoted?)'
			ELSE 'wal receiver: ' || coalesce((SELECT status FROM pg_stat_wal_receiver), 'none') ||
			     ', replay ' || pg_get_wal_replay_pause_state() ||
			     ', slot ' || coalesce((SELECT slot_name FROM pg_stat_wal_receiver), '?') END`))
	}
	pb := ComponentStatus{Name: "pgbouncer", Port: s.State.PgBouncerPort, PID: readPID(s.pgbouncerPIDFile())}
	pb.Running = alive(pb.PID, "pgbouncer")
	if pb.Running {
		if conn, err := connectAdmin(ctx, s.PgBouncerAdminURL()); err != nil {
			pb.Detail = "admin console: " + err.Error()
		} else {
			pb.Detail = "admin console answers"
			conn.Close(context.Background())
		}
	} else {
		pb.Detail = "stopped"
	}
	var redisSts []ComponentStatus
	if s.RedisClustered() {
		for i := range clusterNodes {
			rd := ComponentStatus{Name: redisNodeName(i), Port: s.State.RedisClusterPorts[i], PID: readPID(s.redisNodePIDFile(i))}
			rd.Running = alive(rd.PID, "redis-server")
			if !rd.Running {
				rd.PID = 0
				rd.Detail = "stopped"
			} else {
				rd.Detail = s.clusterNodeDetail(ctx, i)
			}
			redisSts = append(redisSts, rd)
		}
	} else {
		rd := ComponentStatus{Name: "redis", Port: s.State.RedisPort, PID: readPID(s.redisPIDFile())}
		rd.Running = alive(rd.PID, "redis-server")
		if !rd.Running {
			rd.Detail = "stopped"
		} else if err := RedisPing(ctx, s.RedisAddr()); err != nil {
			rd.Detail = "PING: " + err.Error()
		} else {
			rd.Detail = "PONG"
		}
		redisSts = append(redisSts, rd)
	}
	pr := ComponentStatus{Name: "prometheus", Port: s.State.PrometheusPort, PID: readPID(s.prometheusPIDFile())}
	pr.Running = alive(pr.PID, "prometheus")
	switch {
	case !pr.Running:
		pr.PID = 0
		pr.Detail = "stopped"
	case prometheusReady(ctx, s.PrometheusURL()) != nil:
		pr.Detail = "not ready: " + prometheusReady(ctx, s.PrometheusURL()).Error()
	default:
		up, total, err := prometheusTargets(ctx, s.PrometheusURL())
		if err != nil {
			pr.Detail = "ready; targets: " + err.Error()
		} else {
			pr.Detail = fmt.Sprintf("ready at %s, %d/%d parley targets up", s.PrometheusURL(), up, total)
		}
	}
	out = append(out, pb)
	out = append(out, redisSts...)
	return append(out, pr)
}

func (s *Stack) pgStatus(ctx context.Context, name, dir string, port int, url, q string) ComponentStatus {
	st := ComponentStatus{Name: name, Port: port, PID: readPID(filepath.Join(dir, "postmaster.pid"))}
	st.Running = alive(st.PID, "postgres")
	if !st.Running {
		st.PID = 0
		st.Detail = "stopped"
		return st
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		st.Detail = fmt.Sprintf("not answering: %v", err)
		return st
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(ctx, q).Scan(&st.Detail); err != nil {
		st.Detail = fmt.Sprintf("query failed: %v", err)
	}
	return st
}

// Healthy reports whether every component is running.
func Healthy(sts []ComponentStatus) bool {
	for _, c := range sts {
		if !c.Running {
			return false
		}
	}
	return true
}

// connectAdmin connects to PgBouncer's admin console (simple protocol only).
func connectAdmin(ctx context.Context, url string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	return pgx.ConnectConfig(ctx, cfg)
}
