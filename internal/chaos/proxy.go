package chaos

import (
	"context"
	"fmt"
	"strings"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
)

// proxy is a TCP proxy in this process between one instance and one
// upstream (the replica, Redis), made with Toxiproxy's library: the faults
// a network gives — a black hole that accepts, forwards nothing and never
// closes; added latency — on a link that stays up.
type proxy struct {
	p *toxiproxy.Proxy
}

var toxiServer = toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())

// newProxy listens on a free port of 127.0.0.1 and forwards to upstream
// (host:port).
func newProxy(name, upstream string) (*proxy, error) {
	p := toxiproxy.NewProxy(toxiServer, name, "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		return nil, fmt.Errorf("proxy %s: %w", name, err)
	}
	return &proxy{p: p}, nil
}

// addr is the address clients connect to instead of upstream.
func (p *proxy) addr() string { return p.p.Listen }

// blackHole makes the link drop every byte both ways without closing any
// connection (Toxiproxy's timeout toxic with timeout 0): connections,
// old and new, hang.
func (p *proxy) blackHole() error {
	for _, stream := range []string{"upstream", "downstream"} {
		if err := p.add(fmt.Sprintf(`{"name":"blackhole_%s","type":"timeout","stream":%q,"attributes":{"timeout":0}}`, stream, stream)); err != nil {
			return err
		}
	}
	return nil
}

// latency delays every reply by ms milliseconds (downstream).
func (p *proxy) latency(ms int) error {
	return p.add(fmt.Sprintf(`{"name":"latency","type":"latency","stream":"downstream","attributes":{"latency":%d,"jitter":0}}`, ms))
}

func (p *proxy) add(spec string) error {
	if _, err := p.p.Toxics.AddToxicJson(strings.NewReader(spec)); err != nil {
		return fmt.Errorf("proxy %s: toxic %s: %w", p.p.Name, spec, err)
	}
	return nil
}

// heal removes every toxic.
func (p *proxy) heal(ctx context.Context) { p.p.Toxics.ResetToxics(ctx) }

func (p *proxy) close() { p.p.Stop() }
