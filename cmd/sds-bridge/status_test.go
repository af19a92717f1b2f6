package main

import (
	"bytes"
	"net"
	"strings"
	"testing"

	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

func TestStatusURL(t *testing.T) {
	for addr, want := range map[string]string{
		"127.0.0.1:8081":       "http://127.0.0.1:8081/status",
		"0.0.0.0:8081":         "http://127.0.0.1:8081/status",
		":9090":                "http://127.0.0.1:9090/status",
		"[::]:8081":            "http://[::1]:8081/status",
		"http://bridge:8081/":  "http://bridge:8081/status",
		"https://bridge.local": "https://bridge.local/status",
		"localhost:8081":       "http://localhost:8081/status",
	} {
		if got, err := statusURL(addr); err != nil || got != want {
			t.Errorf("statusURL(%q) = %q, %v; want %q", addr, got, err, want)
		}
	}
	if _, err := statusURL("bridge"); err == nil || !strings.Contains(err.Error(), `--admin "bridge"`) {
		t.Errorf("statusURL(\"bridge\") error = %v, want one naming the flag", err)
	}
}

// Nothing listening: status says where it looked.
func TestStatusWithoutBridge(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	var out bytes.Buffer
	err = run(t.Context(), []string{"status", "--admin", addr}, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "is the bridge running with its admin endpoint at "+addr) {
		t.Errorf("status against nothing: %v", err)
	}
}

// A taken admin port stops the bridge at start with the key in the error.
func TestAdminPortTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dir := testkit.ShortDir(t)
	t.Chdir(dir)
	var out syncBuffer
	err = run(t.Context(), []string{"dev", "--admin", l.Addr().String(), "--sds-socket", dir + "/sds.sock", "--dir", dir + "/certs"}, &out, &out)
	if err == nil || !strings.Contains(err.Error(), `admin.listen "`+l.Addr().String()+`"`) || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("dev on a taken admin port: %v", err)
	}
}
