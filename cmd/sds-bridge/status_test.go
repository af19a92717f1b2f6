package main

import (
	"bytes"
	"net"
	"strings"
	"testing"

	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

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
