package statusdoc

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// fetchTimeout bounds the whole request: a bridge that does not answer in
// this time is as good as down for someone looking at it.
const fetchTimeout = 10 * time.Second

// Fetch gets the document from the admin endpoint at addr (host:port or
// an http:// URL): raw is the JSON as served, st its decoding.
func Fetch(ctx context.Context, addr string) (raw []byte, st *Status, err error) {
	url, err := statusURL(addr)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("status: %w", err)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("status: is the bridge running with its admin endpoint at %s? %w", addr, err)
	}
	defer resp.Body.Close()
	raw, err = io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("status: read %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("status: %s answered %s: %s", url, resp.Status, strings.TrimSpace(string(raw)))
	}
	st = &Status{}
	if err := json.Unmarshal(raw, st); err != nil {
		return raw, nil, fmt.Errorf("status: %s did not answer with a bridge status: %w", url, err)
	}
	return raw, st, nil
}

// statusURL turns an admin address into the /status URL; a wildcard listen
// address is reached over loopback.
func statusURL(addr string) (string, error) {
	if strings.HasPrefix(addr, "http://") || strings.HasPrefix(addr, "https://") {
		return strings.TrimSuffix(addr, "/") + "/status", nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("--admin %q: want host:port or an http:// URL", addr)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/status", nil
}
