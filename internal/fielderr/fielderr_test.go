package fielderr

import (
	"errors"
	"testing"
)

// Under puts the section's key in front of every refusal a component
// joined, in its order, including the key a clash names, and gives an
// error without a key the section's key.
func TestUnderPrefixesEveryKeyInOrder(t *testing.T) {
	var l List
	l.Add("key_mode", "%q is bad", "0644")
	l.Clash("bundle_file_name", "cert_file_name", `"x.pem" is already used by`, "")
	l.Add("on_rotate[0].exec.command", "missing")
	got := Under("files[1]", errors.Join(l.Err(), errors.New("plain")))
	want := []string{
		`files[1].key_mode: "0644" is bad`,
		`files[1].bundle_file_name: "x.pem" is already used by files[1].cert_file_name`,
		`files[1].on_rotate[0].exec.command: missing`,
		`files[1]: plain`,
	}
	if len(got) != len(want) {
		t.Fatalf("Under gave %d errors, want %d: %v", len(got), len(want), got)
	}
	for i, e := range got {
		if e.Error() != want[i] {
			t.Errorf("error %d = %q, want %q", i, e, want[i])
		}
		var fe *Error
		if !errors.As(e, &fe) {
			t.Errorf("error %d is not an *Error: %T", i, e)
		}
	}
	if Under("x", nil) != nil || (List{}).Err() != nil {
		t.Error("no refusal must give no error")
	}
}

// An index key joins its prefix without a dot.
func TestUnderJoinsIndexKeysWithoutADot(t *testing.T) {
	got := Under("sds.allowed_uids", New("[1]", "bad"))
	if len(got) != 1 || got[0].Error() != "sds.allowed_uids[1]: bad" {
		t.Errorf("Under = %v", got)
	}
}
