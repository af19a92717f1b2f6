//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// spiffe-helper's Mosquitto example (examples/mosquitto: helper.conf and
// mosquitto.conf, only paths, ports and the agent address changed) under
// `run --spiffe-helper-config --owner <mosquitto>` as root: the bridge
// starts the broker once its folder is complete (require_certificate,
// use_identity_as_username, TLS 1.3 only, `user mosquitto`) and sends it
// SIGHUP after every swap. A client with an SVID of its own (CN jdoe,
// written by a second bridge) publishes every second with full
// verification (chain and host name), and every publish succeeds across
// at least three rotations of the broker's certificate, each one served
// by the same broker process.
func TestSpiffeHelperMosquittoExampleRunsUnchanged(t *testing.T) {
	start := time.Now()
	for _, bin := range []string{"/usr/sbin/mosquitto", "/usr/bin/mosquitto_pub"} {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("%v (make e2e-deps installs Mosquitto from Debian's packages)", err)
		}
	}
	broker, err := lookupUser("mosquitto")
	if err != nil {
		t.Fatal(err)
	}
	client := nobody(t)
	work := newWorkDir(t)
	s := startSPIRE(t, work)
	addEntry(t, s, "/mosquitto", "unix:uid:0", "localhost")
	addEntry(t, s, "/jdoe", "unix:uid:"+uidString(client.UID), "jdoe")

	certs, tlsPort := filepath.Join(work, "certs"), freePort(t)
	helperPath := writeMosquittoExample(t, work, s, certs, tlsPort)
	t.Logf("and on the command line: --owner %s (the broker reads the key as user mosquitto)", broker.Owner())

	b := startHelperBridge(t, work, "mosquitto", helperPath, nil, nil, "--owner", broker.Owner())
	clientDir := startClientFolder(t, work, "jdoe", s, client)

	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	var brokerPID int
	if err := poll(ctx, "the broker listening with TLS", 200*time.Millisecond, func() error {
		b.Running(t)
		pids := childPIDs(b.proc.PID())
		if len(pids) != 1 {
			return fmt.Errorf("the bridge has children %v", pids)
		}
		brokerPID = pids[0]
		_, err := servedSerial(clientDir, tlsPort)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	served, published := publishAcrossRotations(t, ctx, b, clientDir, client, tlsPort, 3)
	if pids := childPIDs(b.proc.PID()); len(pids) != 1 || pids[0] != brokerPID {
		t.Fatalf("broker pid %v at the end, %d at the start: it was restarted", pids, brokerPID)
	}
	if log := readFileString(b.proc.LogPath); !strings.Contains(log, "u'jdoe'") {
		t.Errorf("the broker never logged the client as user jdoe (use_identity_as_username)")
	}
	t.Logf("broker pid %d served %d certificates (%d rotations) to %d publishes, each acknowledged (QoS 1) with full verification; test took %s",
		brokerPID, len(served), len(served)-1, published, time.Since(start).Round(time.Second))
}

// writeMosquittoExample writes the example's mosquitto.conf and
// helper.conf into work, changed only in ports, paths and the agent
// address, and returns the helper.conf's path.
func writeMosquittoExample(t *testing.T, work string, s *spire, certs string, tlsPort int) string {
	t.Helper()
	plainPort := freePort(t)
	conf := loadHelperExample(t, "mosquitto/mosquitto.conf")
	conf.Replace(t, "port", "listener 1883 localhost", fmt.Sprintf("listener %d localhost", plainPort))
	conf.Replace(t, "port", "listener 8883", fmt.Sprintf("listener %d", tlsPort))
	for _, f := range []string{"certfile /opt/spire/certs/mosquitto/svid.pem", "cafile /opt/spire/certs/mosquitto/svid_bundle.pem", "keyfile /opt/spire/certs/mosquitto/svid.key"} {
		conf.Replace(t, "path", f, strings.Replace(f, "/opt/spire/certs/mosquitto", certs, 1))
	}
	confPath := filepath.Join(work, "mosquitto.conf")
	conf.Write(t, confPath, nil)
	helper := loadHelperExample(t, "mosquitto/helper.conf")
	helper.Replace(t, "agent address", `"/tmp/spire-agent/public/api.sock"`, strconv.Quote(s.AgentSocket))
	helper.Replace(t, "path", "./examples/mosquitto/mosquitto.conf", confPath)
	helper.Replace(t, "path", `"/opt/spire/certs/mosquitto"`, strconv.Quote(certs))
	helperPath := filepath.Join(work, "helper.conf")
	helper.Write(t, helperPath, nil)
	return helperPath
}

// publishAcrossRotations publishes as the client every second, each
// publish required to succeed, until the broker has served rotations+1
// certificates; it returns their serials and the number of publishes.
func publishAcrossRotations(t *testing.T, ctx context.Context, b *bridge, clientDir string, client *osUser, port, rotations int) ([]string, int) {
	t.Helper()
	var served []string
	n := 0
	for len(served) < rotations+1 {
		b.Running(t)
		n++
		out, code, err := runCmd(ctx, cmdSpec{Name: "mosquitto_pub", Path: "/usr/bin/mosquitto_pub", User: client, Args: []string{
			"--cafile", filepath.Join(clientDir, helperBundle), "--cert", filepath.Join(clientDir, helperCert), "--key", filepath.Join(clientDir, helperKey),
			"--tls-version", "tlsv1.3", "--host", "localhost", "--port", strconv.Itoa(port),
			"--username", "jdoe", "--id", "jdoe", "-q", "1", "-t", "test/hello", "-m", fmt.Sprintf("hello %d", n)}})
		if err != nil || code != 0 {
			t.Fatalf("publish %d: exit %d %v: %s", n, code, err, out)
		}
		serial, err := servedSerial(clientDir, port)
		if err != nil {
			t.Fatalf("after publish %d: %v", n, err)
		}
		if len(served) == 0 || served[len(served)-1] != serial {
			served = append(served, serial)
			t.Logf("publish %d: the broker serves serial %s", n, serial)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d rotations not seen: %v (served %v)", rotations, ctx.Err(), served)
		case <-time.After(time.Second):
		}
	}
	return served, n
}

// servedSerial is the serial of the certificate the broker presents to a
// TLS 1.3 client holding the client folder's SVID and verifying the
// broker as "localhost" against the folder's bundle.
func servedSerial(clientDir string, port int) (string, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(clientDir, helperCert), filepath.Join(clientDir, helperKey))
	if err != nil {
		return "", err
	}
	roots := x509.NewCertPool()
	pem, err := os.ReadFile(filepath.Join(clientDir, helperBundle))
	if err != nil || !roots.AppendCertsFromPEM(pem) {
		return "", fmt.Errorf("client bundle: %v", err)
	}
	d := tls.Dialer{Config: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS13}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber.Text(16), nil
}

// childPIDs lists the children of pid, from /proc.
func childPIDs(pid int) []int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var pids []int
	for _, task := range tasks {
		data, _ := os.ReadFile(task)
		for _, f := range strings.Fields(string(data)) {
			if p, err := strconv.Atoi(f); err == nil {
				pids = append(pids, p)
			}
		}
	}
	return pids
}
