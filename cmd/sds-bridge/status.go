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

// statusTimeout bounds the whole request: a bridge that does not answer in
// this time is as good as down for someone looking at it.
const statusTimeout = 10 * time.Second

// runStatus prints what a running bridge delivers, from its admin /status.
// It exits 0 whenever it got an answer, ready or not (the text says which);
// readiness probes use /readyz or `check`.
func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sds-bridge status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("admin", "", "the bridge's admin address (default: admin.listen of --config, else "+config.DefaultAdminListen+")")
	configFile := fs.String("config", "", "the bridge's YAML config, to find its admin address")
	asJSON := fs.Bool("json", false, "print the raw /status JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("status: unexpected argument %q", fs.Arg(0))
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
	url, err := statusURL(target)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("status: is the bridge running with its admin endpoint at %s? %w", target, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("status: read %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status: %s answered %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	if *asJSON {
		_, err := stdout.Write(body)
		return err
	}
	var st admin.Status
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("status: %s did not answer with a bridge status: %w", url, err)
	}
	return st.WriteText(stdout, time.Now())
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
