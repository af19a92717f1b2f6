package envoyboot

import (
	"strings"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// normalize rewrites doc, a mapping read as message md, into what
// protojson takes, wherever Envoy's own loader is more lenient than
// protojson:
//
//   - enum values match case-insensitively (Envoy parses JSON with
//     case_insensitive_enum_parsing): `type: strict_dns` becomes STRICT_DNS;
//   - a single value where a repeated field is expected is a one-element
//     list (protobuf's C++ JSON reader accepts it), so
//     `grpc_services: {envoy_grpc: …}` reads as `[{envoy_grpc: …}]`.
//
// It follows typed_config (Any, by its @type) and TypedStruct values (by
// their type_url). What it does not recognise it leaves alone, for protojson
// to report.
func normalize(n *yaml.Node, md protoreflect.MessageDescriptor) {
	n = deref(n)
	if n.Kind != yaml.MappingNode {
		return
	}
	switch md.FullName() {
	case "google.protobuf.Any":
		normalizeAny(n)
		return
	case "xds.type.v3.TypedStruct", "udpa.type.v1.TypedStruct":
		if url := mapValue(n, "type_url"); url != nil {
			if mt, err := protoregistry.GlobalTypes.FindMessageByURL(deref(url).Value); err == nil {
				if v := mapValue(n, "value"); v != nil {
					normalize(v, mt.Descriptor())
				}
			}
		}
		return
	}
	if strings.HasPrefix(string(md.FullName()), "google.protobuf.") {
		return // Struct, Duration, wrappers…: protojson's own JSON forms
	}
	fields := md.Fields()
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		fd := fields.ByName(protoreflect.Name(k.Value))
		if fd == nil {
			fd = fields.ByJSONName(k.Value)
		}
		if fd == nil {
			continue
		}
		normalizeField(v, fd)
	}
}

func normalizeField(v *yaml.Node, fd protoreflect.FieldDescriptor) {
	if isNull(v) {
		return
	}
	switch {
	case fd.IsMap():
		m := deref(v)
		if m.Kind != yaml.MappingNode {
			return
		}
		for i := 1; i < len(m.Content); i += 2 {
			normalizeValue(m.Content[i], fd.MapValue())
		}
	case fd.IsList():
		if deref(v).Kind != yaml.SequenceNode {
			one := *v
			*v = yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Line: one.Line, Column: one.Column, Content: []*yaml.Node{&one}}
		}
		for _, e := range deref(v).Content {
			normalizeValue(e, fd)
		}
	default:
		normalizeValue(v, fd)
	}
}

// normalizeValue handles one value (not a list) of fd's type.
func normalizeValue(v *yaml.Node, fd protoreflect.FieldDescriptor) {
	switch {
	case fd.Message() != nil:
		normalize(v, fd.Message())
	case fd.Enum() != nil:
		s := deref(v)
		if s.Kind != yaml.ScalarNode || fd.Enum().Values().ByName(protoreflect.Name(s.Value)) != nil {
			return
		}
		vals := fd.Enum().Values()
		for i := range vals.Len() {
			if name := string(vals.Get(i).Name()); strings.EqualFold(name, s.Value) {
				s.Value = name
				return
			}
		}
	}
}

// normalizeAny reads an Any as protojson does: @type names the message,
// whose fields sit beside it (or under "value" for a well-known type).
func normalizeAny(n *yaml.Node) {
	t := mapValue(n, "@type")
	if t == nil {
		return
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByURL(deref(t).Value)
	if err != nil {
		// A type no linked package registers (a private extension): its
		// fields cannot be read, so they are dropped for protojson, which
		// reads the Any as an empty placeholder (unknownTypes); the walk
		// reports it with its line.
		var keep []*yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == "@type" {
				keep = append(keep, n.Content[i], n.Content[i+1])
			}
		}
		n.Content = keep
		return
	}
	if strings.HasPrefix(string(mt.Descriptor().FullName()), "google.protobuf.") {
		return
	}
	normalize(n, mt.Descriptor())
}

func deref(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	n = deref(n)
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// mapValue is the value of key in mapping n, or nil.
func mapValue(n *yaml.Node, key string) *yaml.Node {
	_, v := mapEntry(n, key)
	return v
}

// mapEntry is the key and value nodes of key in mapping n, or nils.
func mapEntry(n *yaml.Node, keys ...string) (*yaml.Node, *yaml.Node) {
	if n == nil {
		return nil, nil
	}
	n = deref(n)
	if n.Kind != yaml.MappingNode {
		return nil, nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		for _, key := range keys {
			if n.Content[i].Value == key {
				return n.Content[i], n.Content[i+1]
			}
		}
	}
	return nil, nil
}
