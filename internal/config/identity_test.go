package config

import (
	"testing"
)

func TestSVIDAndFederationKeys(t *testing.T) {
	c, err := parseDefaultValidate(t, `workload_api:
  default_svid_hint: internal
files:
  - dir: /a
    svid: spiffe://example.org/db-admin
    include_federated_domains: true
    federated_bundle: concatenate
    add_intermediates_to_bundle: true
  - dir: /b
    layout: spiffe
    svid: external
`)
	if err != nil {
		t.Fatal(err)
	}
	if c.WorkloadAPI.DefaultSVIDHint != "internal" {
		t.Errorf("default_svid_hint = %q", c.WorkloadAPI.DefaultSVIDHint)
	}
	f := c.Files[0]
	if f.SVID != "spiffe://example.org/db-admin" || !f.IncludeFederatedDomains || f.FederatedBundle != "concatenate" || !f.AddIntermediatesToBundle {
		t.Errorf("files[0] = %+v", f)
	}
	if c.Files[1].SVID != "external" {
		t.Errorf("files[1].svid = %q", c.Files[1].SVID)
	}
}

func TestSVIDAndFederationErrorsNameKeyAndValue(t *testing.T) {
	checkErrors(t, []errorCase{
		{"bad default hint id", "workload_api:\n  default_svid_hint: spiffe://Bad Domain/x\n", []string{"workload_api.default_svid_hint", `"spiffe://Bad Domain/x"`, "not a valid SPIFFE ID"}},
		{"spaced default hint", "workload_api:\n  default_svid_hint: \" internal\"\n", []string{"workload_api.default_svid_hint", `" internal"`}},
		{"bad folder svid", "files:\n  - dir: /a\n    svid: spiffe://\n", []string{"files[0].svid", `"spiffe://"`}},
		{"unknown federated_bundle", "files:\n  - dir: /a\n    include_federated_domains: true\n    federated_bundle: merge\n", []string{"files[0].federated_bundle", `"merge"`, "separate, concatenate"}},
		{"concatenate alone", "files:\n  - dir: /a\n    federated_bundle: concatenate\n", []string{"files[0].federated_bundle", `"concatenate"`, "include_federated_domains"}},
		{"include in spiffe layout", "files:\n  - dir: /a\n    layout: spiffe\n    include_federated_domains: true\n", []string{"files[0].include_federated_domains", "spiffe-helper"}},
		{"federated_bundle in spiffe layout", "files:\n  - dir: /a\n    layout: spiffe\n    federated_bundle: separate\n", []string{"files[0].federated_bundle", `"separate"`}},
		{"intermediates in spiffe layout", "files:\n  - dir: /a\n    layout: spiffe\n    add_intermediates_to_bundle: true\n", []string{"files[0].add_intermediates_to_bundle"}},
		{"include not a bool", "files:\n  - dir: /a\n    include_federated_domains: sometimes\n", []string{"sometimes"}},
	})
}
