package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sds-bridge/sds-bridge/filesink"
)

// The components' Go types have YAML of the config's own (a mode is a
// quoted octal string, a signal a name), and they do not import YAML: so
// checkNode reads these values first and leaves nodes yaml.v3 decodes.
var valueReaders = map[reflect.Type]func(n *yaml.Node) error{
	reflect.TypeFor[os.FileMode]():    readMode,
	reflect.TypeFor[time.Duration]():  readDuration,
	reflect.TypeFor[syscall.Signal](): readSignal(false),
	reflect.TypeFor[Signal]():         readSignal(true),
	reflect.TypeFor[filesink.Owner](): readOwner,
}

// nodeChecker walks a document as Decode will fill a value, refusing
// unknown keys and reading valueReaders' values. An alias is walked once
// however often it is used (checked); scalars, by line, give Decode's
// errors, which name only the line, their keys.
type nodeChecker struct {
	checked map[checkedNode]bool
	scalars map[int][]keyedScalar
}

type keyedScalar struct{ key, value string }

type checkedNode struct {
	n *yaml.Node
	t reflect.Type
}

// checkNode checks doc as Decode will fill a t, and returns its scalars.
func checkNode(doc *yaml.Node, t reflect.Type) (map[int][]keyedScalar, error) {
	c := nodeChecker{checked: map[checkedNode]bool{}, scalars: map[int][]keyedScalar{}}
	return c.scalars, c.check(doc, t, "")
}

func (c nodeChecker) check(n *yaml.Node, t reflect.Type, key string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if c.checked[checkedNode{n, t}] {
		return nil
	}
	c.checked[checkedNode{n, t}] = true
	if n.Kind == yaml.ScalarNode {
		c.scalars[n.Line] = append(c.scalars[n.Line], keyedScalar{key, n.Value})
	}
	if read, ok := valueReaders[t]; ok {
		if err := read(n); err != nil {
			return fmt.Errorf("%s: line %d: %w", key, n.Line, err)
		}
		return nil
	}
	switch {
	case n.Kind == yaml.DocumentNode && len(n.Content) == 1:
		return c.check(n.Content[0], t, key)
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Struct:
		return c.checkStruct(n, t, key)
	case n.Kind == yaml.SequenceNode && t.Kind() == reflect.Slice:
		for i, e := range n.Content {
			if err := c.check(e, t.Elem(), fmt.Sprintf("%s[%d]", key, i)); err != nil {
				return err
			}
		}
	}
	// A value of the wrong kind is left to Decode, which says so.
	return nil
}

func (c nodeChecker) checkStruct(n *yaml.Node, t reflect.Type, key string) error {
	keys, types := yamlFields(t)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Tag == "!!merge" {
			if err := c.checkMerge(v, t, key); err != nil {
				return err
			}
			continue
		}
		ft, ok := types[k.Value]
		if !ok {
			err := fmt.Errorf("line %d: unknown key %q%s", k.Line, k.Value, DidYouMean(k.Value, keys))
			if key == "" {
				return err
			}
			return fmt.Errorf("%s: %w", key, err)
		}
		if err := c.check(v, ft, joinKey(key, k.Value)); err != nil {
			return err
		}
	}
	return nil
}

// checkMerge checks the maps a "<<" key merges into a struct.
func (c nodeChecker) checkMerge(v *yaml.Node, t reflect.Type, key string) error {
	if v.Kind != yaml.SequenceNode {
		return c.check(v, t, key)
	}
	for _, m := range v.Content {
		if err := c.check(m, t, key); err != nil {
			return err
		}
	}
	return nil
}

func joinKey(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

// yamlFields are the YAML keys of struct t, inline fields' included, in
// order, and each key's type.
func yamlFields(t reflect.Type) ([]string, map[string]reflect.Type) {
	var keys []string
	types := map[string]reflect.Type{}
	for f := range t.Fields() {
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch {
		case opts == "inline":
			k, ts := yamlFields(f.Type)
			keys = append(keys, k...)
			for n, ft := range ts {
				types[n] = ft
			}
		case name != "" && name != "-":
			keys = append(keys, name)
			types[name] = f.Type
		}
	}
	return keys, types
}

// scalar refuses a map, list or alias where a value of what is wanted.
func scalar(n *yaml.Node, what string) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("%s, not %s", what, describe(n))
	}
	return nil
}

func decodeAs(n *yaml.Node, tag, value string) {
	n.Tag, n.Value, n.Style = tag, value, 0
}

func readMode(n *yaml.Node) error {
	if err := scalar(n, `mode: want a quoted octal string such as "0640"`); err != nil {
		return err
	}
	if n.Tag != "!!str" {
		return fmt.Errorf("mode %s must be a quoted octal string such as \"0640\"", n.Value)
	}
	m, err := ParseMode(n.Value)
	if err != nil {
		return err
	}
	decodeAs(n, "!!int", strconv.FormatUint(uint64(m), 10))
	return nil
}

// durationSyntax is what time.ParseDuration reads; a value that matches
// it and still fails to parse does not fit in a time.Duration.
var durationSyntax = regexp.MustCompile(`^[-+]?((\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h))+$`)

func readDuration(n *yaml.Node) error {
	if err := scalar(n, `duration: want a number with a unit, such as "30s" or "2m"`); err != nil {
		return err
	}
	_, err := time.ParseDuration(n.Value)
	switch {
	case err != nil && durationSyntax.MatchString(n.Value):
		return fmt.Errorf("duration %q is out of range: at most 2562047h (about 292 years)", n.Value)
	case err != nil:
		return fmt.Errorf("duration %q: want a number with a unit, such as \"30s\" or \"2m\"", n.Value)
	}
	// A string, even "0": yaml.v3 decodes a duration from a string only.
	n.Tag, n.Style = "!!str", yaml.DoubleQuotedStyle
	return nil
}

// readSignal reads a name ParseSignal knows or "none" (NoSignal), which
// only supervise.renew_signal takes: a signal action must send a signal.
func readSignal(none bool) func(*yaml.Node) error {
	return func(n *yaml.Node) error {
		if err := scalar(n, "signal: want a name such as SIGHUP"); err != nil {
			return err
		}
		if strings.EqualFold(n.Value, "none") {
			if !none {
				return errors.New("none: a signal action must send a signal")
			}
			decodeAs(n, "!!int", strconv.Itoa(int(NoSignal)))
			return nil
		}
		sig, err := ParseSignal(n.Value)
		if err != nil && none {
			return fmt.Errorf("%q: %v (or none)", n.Value, err)
		}
		if err != nil {
			return fmt.Errorf("%q: %v", n.Value, err)
		}
		decodeAs(n, "!!int", strconv.Itoa(int(sig)))
		return nil
	}
}

// readOwner leaves the map of filesink.Owner's fields.
func readOwner(n *yaml.Node) error {
	if err := scalar(n, `owner: want "uid:gid", e.g. "999:999"`); err != nil {
		return err
	}
	uid, gid, err := ParseOwner(n.Value)
	if err != nil {
		return fmt.Errorf("%q: %v", n.Value, err)
	}
	field := func(v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v} }
	id := func(v int) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(v)} }
	*n = yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: n.Line, Column: n.Column,
		Content: []*yaml.Node{field("uid"), id(uid), field("gid"), id(gid)}}
	return nil
}
