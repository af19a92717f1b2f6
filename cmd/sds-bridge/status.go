package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/sds-bridge/sds-bridge/admin"
	"github.com/sds-bridge/sds-bridge/internal/config"
)

// runStatus prints a running bridge's admin /status, and exits 0 ready,
// exitBad not ready, exitNoAnswer when no bridge answered with a status.
func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sds-bridge status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("admin", "", "the bridge's admin address (default: admin.listen of --config, else "+config.DefaultAdminListen+")")
	configFile := fs.String("config", "", "the bridge's YAML config, to find its admin address")
	asJSON := fs.Bool("json", false, "print the raw /status JSON")
	if err := parseFlags(fs, args); err != nil {
		return usageError(err)
	}
	if fs.NArg() > 0 {
		return usageError(fmt.Errorf("status: unexpected argument %q", fs.Arg(0)))
	}
	target := *addr
	if target == "" {
		target = config.DefaultAdminListen
		if *configFile != "" {
			cfg, err := config.Load(*configFile)
			if err != nil {
				return err
			}
			if target = cfg.Admin.Address(); target == "" {
				return fmt.Errorf("status: admin.listen is empty in %s: that bridge has no admin endpoint", *configFile)
			}
		}
	}
	raw, st, err := fetchStatus(ctx, target)
	if *asJSON && raw != nil {
		if _, werr := stdout.Write(raw); werr != nil {
			return werr
		}
	}
	if err != nil {
		return coded{exitNoAnswer, err}
	}
	if !*asJSON {
		if err := st.WriteText(stdout, time.Now()); err != nil {
			return err
		}
	}
	if !st.Ready {
		return coded{code: exitBad}
	}
	return nil
}

// fetchTimeout bounds the whole request: a bridge that does not answer in
// this time is as good as down.
const fetchTimeout = 10 * time.Second

// fetchStatus gets the document from the admin endpoint at addr: raw as
// served, st decoded.
func fetchStatus(ctx context.Context, addr string) (raw []byte, st *admin.Status, err error) {
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
	st = &admin.Status{}
	if err := json.Unmarshal(raw, st); err != nil {
		return raw, nil, fmt.Errorf("status: %s did not answer with a bridge status: %w", url, err)
	}
	return raw, st, nil
}

// statusURL is the /status URL of an admin address (host:port, or an
// http:// URL); a wildcard host is reached over loopback.
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
