package config

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// maxTypeErrors is how many wrong-type errors are reported; the others
// are counted. A list of 20,000 wrong values needs no 20,000 lines.
const maxTypeErrors = 10

// typeErrorsWithKeys caps te's errors and puts the key in front of each
// one reported, walking doc once whatever the number of errors: parsing
// it again for each took 615 s of CPU for 20,000.
func typeErrorsWithKeys(doc *yaml.Node, te *yaml.TypeError) {
	if more := len(te.Errors) - maxTypeErrors; more > 0 {
		te.Errors = append(te.Errors[:maxTypeErrors:maxTypeErrors], fmt.Sprintf("and %d more", more))
	}
	byLine := map[int][]keyedScalar{}
	walkKeys(doc, func(n *yaml.Node, path string) {
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

// walkKeys calls fn with each value of doc below the top and its dotted
// key, in document order.
func walkKeys(doc *yaml.Node, fn func(n *yaml.Node, path string)) {
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
	walk(doc, "")
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
