package config

import (
	"reflect"
	"strings"
	"testing"
)

// An unknown key is reported with the nearest key of its section, when
// one is close enough to be the one meant ("adress" → "address"), at every
// depth; a key close to none gets no guess.
func TestAnUnknownKeySuggestsTheNearestKnownKey(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"workload_api:\n  adress: unix:///x\n", `line 2: unknown key "adress"; did you mean "address"?`},
		{"sds:\n  allowed_uid: [101]\n", `unknown key "allowed_uid"; did you mean "allowed_uids"?`},
		{"fils:\n  - dir: /a\n", `unknown key "fils"; did you mean "files"?`},
		{"files:\n  - dir: /a\n    cert_fle_name: a.pem\n", `unknown key "cert_fle_name"; did you mean "cert_file_name"?`},
		{"files:\n  - dir: /a\n    on_rotate:\n      - exec: {comand: [x]}\n", `unknown key "comand"; did you mean "command"?`},
		{"admin:\n  Listen: x\n", `unknown key "Listen"; did you mean "listen"?`},
		{"sds:\n  colour: blue\n", `line 2: unknown key "colour"`},
	} {
		_, err := Parse(strings.NewReader(tc.yaml))
		if err == nil || !strings.HasSuffix(err.Error(), tc.want) {
			t.Errorf("%q: %v, want it to end %q", tc.yaml, err, tc.want)
		}
	}
}

// Nearest guesses only within two edits (a third of a long name), and
// never a name sharing nearly nothing with the unknown one.
func TestNearestGuessesOnlyCloseNames(t *testing.T) {
	known := []string{"dir", "layout", "cert_file_name", "key_file_name"}
	for key, want := range map[string]string{
		"dri": "dir", "layot": "layout", "cert_filename": "cert_file_name", "certificate_file_name": "cert_file_name",
		"x": "", "ab": "", "key_file": "", "KEY_FILE_NAME": "key_file_name",
	} {
		if got := Nearest(key, known); got != want {
			t.Errorf("Nearest(%q) = %q, want %q", key, got, want)
		}
	}
}

// Every exported field of a type the YAML decodes into says its key, or
// "-": yaml.v3 would take an untagged field's lower-cased name as a key,
// and a component's Logger or Sinks must never be one.
func TestEveryDecodedFieldIsTagged(t *testing.T) {
	seen := map[reflect.Type]bool{}
	var visit func(typ reflect.Type)
	visit = func(typ reflect.Type) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
			typ = typ.Elem()
		}
		if _, read := valueReaders[typ]; read || seen[typ] || typ.Kind() != reflect.Struct {
			return
		}
		seen[typ] = true
		for f := range typ.Fields() {
			tag, ok := f.Tag.Lookup("yaml")
			switch {
			case !f.IsExported():
			case !ok || tag == "":
				t.Errorf("%s.%s has no yaml tag", typ, f.Name)
			case tag != "-":
				visit(f.Type)
			}
		}
	}
	visit(reflect.TypeFor[Config]())
	if len(seen) < 10 {
		t.Errorf("only %d types visited", len(seen))
	}
}

// A key the YAML cannot have (a component's field tagged "-") is unknown,
// with the section's key in front.
func TestAComponentsOwnFieldIsNoKey(t *testing.T) {
	_, err := Parse(strings.NewReader("workload_api:\n  logger: x\n"))
	if err == nil || !strings.Contains(err.Error(), `workload_api: line 2: unknown key "logger"`) {
		t.Errorf("Parse = %v, want workload_api.logger refused as unknown", err)
	}
}
