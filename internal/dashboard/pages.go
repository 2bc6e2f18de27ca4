package dashboard

import (
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
)

// The page's parts, embedded: the binary serves them with nothing fetched
// from anywhere else.
//
//go:embed page/dashboard.html page/login.html page/dashboard.css page/dashboard.js
var pageFS embed.FS

// pages are the HTML documents, built once: the stylesheet and the script
// inlined, and a Content-Security-Policy that allows exactly them (by hash)
// and fetches from this origin only.
type pages struct {
	dashboard, login, loginFailed []byte
	csp                           string
}

func newPages() (pages, error) {
	read := func(name string) (string, error) {
		b, err := pageFS.ReadFile("page/" + name)
		if err != nil {
			return "", fmt.Errorf("dashboard page %s: %w", name, err)
		}
		return string(b), nil
	}
	var p pages
	css, err := read("dashboard.css")
	if err != nil {
		return p, err
	}
	js, err := read("dashboard.js")
	if err != nil {
		return p, err
	}
	dash, err := read("dashboard.html")
	if err != nil {
		return p, err
	}
	login, err := read("login.html")
	if err != nil {
		return p, err
	}
	fill := strings.NewReplacer("/*STYLE*/", css, "/*SCRIPT*/", js)
	p.dashboard = []byte(fill.Replace(dash))
	p.login = []byte(fill.Replace(strings.Replace(login, "<!--FAILED-->", "", 1)))
	p.loginFailed = []byte(fill.Replace(strings.Replace(login, "<!--FAILED-->",
		`<p class="error" role="alert">That is not the admin token. Try again.</p>`, 1)))
	p.csp = "default-src 'none'; style-src " + hash(css) + "; script-src " + hash(js) +
		"; img-src data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
	return p, nil
}

func hash(s string) string {
	h := sha256.Sum256([]byte(s))
	return "'sha256-" + base64.StdEncoding.EncodeToString(h[:]) + "'"
}

func (p pages) write(w http.ResponseWriter, page []byte) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", p.csp)
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	_, _ = w.Write(page)
}
