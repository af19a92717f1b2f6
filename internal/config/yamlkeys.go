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

// typeErrorsWithKeys caps te's errors and puts the key in front of each,
// from checkNode's scalars: parsing the document again for each error took
// 615 s of CPU for 20,000.
func typeErrorsWithKeys(byLine map[int][]keyedScalar, te *yaml.TypeError) {
	if more := len(te.Errors) - maxTypeErrors; more > 0 {
		te.Errors = append(te.Errors[:maxTypeErrors:maxTypeErrors], fmt.Sprintf("and %d more", more))
	}
	for i, m := range te.Errors[:min(len(te.Errors), maxTypeErrors)] {
		te.Errors[i] = typeErrorWithKey(byLine, m)
	}
}

// yaml.v3's words for a value of the wrong type; it shortens a long value
// to its first 7 bytes and "...".
var typeErrorText = regexp.MustCompile("^line ([0-9]+): cannot unmarshal !![a-z]+ `([^`]*)`")

// typeErrorWithKey puts the key in front of one of yaml.v3's errors when
// one scalar on its line has its value.
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
