package config

import "testing"

// TestMaxConnectionsAreReadAndNegativeOnesNameTheirKey: sds.max_connections
// and admin.max_connections are read as given, stay 0 when absent (the
// components' defaults apply), and a negative or non-integer value is an
// error naming the key or its line.
func TestMaxConnectionsAreReadAndNegativeOnesNameTheirKey(t *testing.T) {
	c, err := parseDefaultValidate(t, "sds:\n  max_connections: 64\nadmin:\n  max_connections: 8\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.SDS.MaxConnections != 64 || c.Admin.MaxConnections != 8 {
		t.Errorf("max_connections = %d, %d; want 64, 8", c.SDS.MaxConnections, c.Admin.MaxConnections)
	}
	if c, err = parseDefaultValidate(t, "sds: {}\n"); err != nil {
		t.Fatal(err)
	}
	if c.SDS.MaxConnections != 0 || c.Admin.MaxConnections != 0 {
		t.Errorf("absent max_connections = %d, %d; want 0 (the component's default)", c.SDS.MaxConnections, c.Admin.MaxConnections)
	}
	checkErrors(t, []errorCase{
		{"negative sds cap", "sds:\n  max_connections: -1\n", []string{"sds.max_connections", "-1"}},
		{"negative admin cap", "admin:\n  max_connections: -5\n", []string{"admin.max_connections", "-5"}},
		{"cap not a number", "admin:\n  max_connections: lots\n", []string{"line 2", "lots"}},
	})
}
