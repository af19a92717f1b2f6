package statusdoc

import (
	"strings"
	"testing"
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
