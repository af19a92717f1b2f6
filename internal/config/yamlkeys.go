package config

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// valueError is a value Mode or Duration refused. yaml.v3 hands an
// unmarshaler the value's node but not its key: Parse finds the key by the
// node's position.
type valueError struct {
	line, column int
	msg          string
}

func (e *valueError) Error() string { return fmt.Sprintf("line %d: %s", e.line, e.msg) }

func refuse(n *yaml.Node, format string, args ...any) error {
	return &valueError{line: n.Line, column: n.Column, msg: fmt.Sprintf(format, args...)}
}

// keyAt is the dotted key ("files[0].on_rotate[1].exec.timeout") whose
// value starts at line and column of the YAML in data; "" if none does.
func keyAt(data []byte, line, column int) string {
	key := ""
	walkKeys(data, func(n *yaml.Node, path string) {
		if key == "" && n.Line == line && n.Column == column {
			key = path
		}
	})
	return key
}

// maxTypeErrors is how many wrong-type errors are reported; the others
// are counted. A list of 20,000 wrong values needs no 20,000 lines.
const maxTypeErrors = 10

// typeErrorsWithKeys caps te's errors and puts the key in front of each
// one reported. The document is parsed once, whatever the number of
// errors: it used to be parsed again for each (615 s of CPU for 20,000).
func typeErrorsWithKeys(data []byte, te *yaml.TypeError) {
	if more := len(te.Errors) - maxTypeErrors; more > 0 {
		te.Errors = append(te.Errors[:maxTypeErrors:maxTypeErrors], fmt.Sprintf("and %d more", more))
	}
	byLine := map[int][]keyedScalar{}
	walkKeys(data, func(n *yaml.Node, path string) {
		if n.Kind == yaml.ScalarNode {
			byLine[n.Line] = append(byLine[n.Line], keyedScalar{path, n.Value})
		}
	})
	for i, m := range te.Errors[:min(len(te.Errors), maxTypeErrors)] {
		te.Errors[i] = typeErrorWithKey(byLine, m)
	}
}

// keyedScalar is a scalar value and its dotted key.
type keyedScalar struct{ key, value string }

// yaml.v3's words for a value of the wrong type; it shortens a long value
// to its first 7 bytes and "...".
var typeErrorText = regexp.MustCompile("^line ([0-9]+): cannot unmarshal !![a-z]+ `([^`]*)`")

// typeErrorWithKey puts the key in front of one of yaml.v3's "line 2:
// cannot unmarshal !!str `envoy` into int", when one scalar on that line
// has that value.
func typeErrorWithKey(byLine map[int][]keyedScalar, msg string) string {
	m := typeErrorText.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	line, _ := strconv.Atoi(m[1])
	shown, cut := strings.CutSuffix(m[2], "...")
	var keys []string
	for _, s := range byLine[line] {
		if s.value == shown || cut && strings.HasPrefix(s.value, shown) {
			keys = append(keys, s.key)
		}
	}
	if len(keys) != 1 {
		return msg
	}
	return keys[0] + ": " + msg
}

// walkKeys parses the YAML in data and calls fn with each value below the
// top and its dotted key, in document order.
func walkKeys(data []byte, fn func(n *yaml.Node, path string)) {
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil {
		return
	}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		if path != "" {
			fn(n, path)
		}
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				p := n.Content[i].Value
				if path != "" {
					p = path + "." + p
				}
				walk(n.Content[i+1], p)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				walk(c, fmt.Sprintf("%s[%d]", path, i))
			}
		}
	}
	walk(&doc, "")
}

// describe shows a value that should have been a scalar, on one line.
func describe(n *yaml.Node) string {
	kind := map[yaml.Kind]string{yaml.MappingNode: "a map", yaml.SequenceNode: "a list", yaml.AliasNode: "an alias"}[n.Kind]
	if kind == "" {
		return fmt.Sprintf("%q", n.Value)
	}
	flow := *n
	flow.Style |= yaml.FlowStyle
	text, err := yaml.Marshal(&flow)
	if err != nil {
		return kind
	}
	return kind + " " + strings.TrimSpace(string(text))
}

// friendlyYAMLError rewrites yaml.v3's "field x not found in type config.Folder"
// into words about the key.
func friendlyYAMLError(err error) error {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "yaml: unmarshal errors:\n  ")
	if i := strings.Index(msg, "field "); i >= 0 && strings.Contains(msg, " not found in type ") {
		key, typ, _ := strings.Cut(msg[i+len("field "):], " not found in type ")
		typ, _, _ = strings.Cut(typ, "\n")
		return fmt.Errorf("%sunknown key %q%s", msg[:i], key, DidYouMean(key, keysOfType()[typ]))
	}
	return errors.New(msg)
}
