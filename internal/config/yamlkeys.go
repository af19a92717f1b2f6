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
	keys := keysWhere(data, func(n *yaml.Node) bool { return n.Line == line && n.Column == column })
	if len(keys) == 0 {
		return ""
	}
	return keys[0]
}

// yaml.v3's words for a value of the wrong type; it shortens a long value
// to its first 7 bytes and "...".
var typeErrorText = regexp.MustCompile("^line ([0-9]+): cannot unmarshal !![a-z]+ `([^`]*)`")

// typeErrorWithKey puts the key in front of one of yaml.v3's "line 2:
// cannot unmarshal !!str `envoy` into int", when one scalar on that line
// has that value.
func typeErrorWithKey(data []byte, msg string) string {
	m := typeErrorText.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	line, _ := strconv.Atoi(m[1])
	shown, cut := strings.CutSuffix(m[2], "...")
	keys := keysWhere(data, func(n *yaml.Node) bool {
		return n.Kind == yaml.ScalarNode && n.Line == line &&
			(n.Value == shown || cut && strings.HasPrefix(n.Value, shown))
	})
	if len(keys) != 1 {
		return msg
	}
	return keys[0] + ": " + msg
}

// keysWhere lists, in document order, the dotted keys of the values in
// the YAML in data for which match holds.
func keysWhere(data []byte, match func(*yaml.Node) bool) []string {
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil {
		return nil
	}
	var keys []string
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		if path != "" && match(n) {
			keys = append(keys, path)
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
	return keys
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
		key := msg[i+len("field "):]
		key = key[:strings.Index(key, " not found in type ")]
		return fmt.Errorf("%sunknown key %q", msg[:i], key)
	}
	return errors.New(msg)
}
