package envoyboot

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"sync"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// marshalYAML renders m as Envoy reads it: proto field names, enums by
// name, durations as "10s", Any with "@type". protojson orders fields by
// their place in the .proto file and map keys sorted, and the yaml.Node
// round trip keeps that order, so the output is stable for golden files.
func marshalYAML(m proto.Message) ([]byte, error) {
	js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return nil, err
	}
	// JSON is YAML: decoding it into a Node keeps key order and tags.
	var doc yaml.Node
	if err := yaml.Unmarshal(js, &doc); err != nil {
		return nil, err
	}
	blockStyle(&doc)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// blockStyle drops JSON's flow style and quotes; the encoder quotes again
// wherever a plain scalar would read back as another type ("8443" as a
// string stays quoted).
func blockStyle(n *yaml.Node) {
	n.Style = 0
	for _, c := range n.Content {
		blockStyle(c)
	}
}

// Parse reads a bootstrap the way Envoy does (YAML → JSON → proto) but
// strictly: unknown fields, duplicate keys, more than one document and
// typed_configs whose type is not known are errors. It does not run
// validation; Validate does.
func Parse(data []byte) (*bootstrapv3.Bootstrap, error) {
	b, _, err := parse(data)
	return b, err
}

// parse is Parse that also returns the YAML, read leniently where Envoy is
// (normalize), for the lines in messages.
func parse(data []byte) (*bootstrapv3.Bootstrap, *yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil, errors.New("parse: empty document")
		}
		return nil, nil, fmt.Errorf("parse: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, nil, errors.New("parse: more than one YAML document; Envoy reads a single bootstrap")
	}
	normalize(doc.Content[0], (&bootstrapv3.Bootstrap{}).ProtoReflect().Descriptor())
	var v any
	if err := doc.Decode(&v); err != nil {
		return nil, nil, fmt.Errorf("parse: %w", err)
	}
	if _, ok := v.(map[string]any); !ok {
		return nil, nil, fmt.Errorf("parse: the document is a %T, not a mapping", v)
	}
	js, err := json.Marshal(v)
	if err != nil {
		return nil, nil, fmt.Errorf("parse: YAML → JSON: %w", err)
	}
	b := &bootstrapv3.Bootstrap{}
	if err := (protojson.UnmarshalOptions{Resolver: unknownTypes{protoregistry.GlobalTypes}}).Unmarshal(js, b); err != nil {
		return nil, nil, fmt.Errorf("parse: %s", yamlLines(err.Error(), &doc))
	}
	return b, &doc, nil
}

// unknownTypes resolves what the registry holds, and any other type URL
// to an empty placeholder message, so that a typed_config of a type no
// linked package registers (a private extension) parses as an Any that
// keeps its type URL; normalize has dropped its fields, and the walk
// reports it (checker.unknownType).
type unknownTypes struct{ *protoregistry.Types }

func (r unknownTypes) FindMessageByURL(url string) (protoreflect.MessageType, error) {
	mt, err := r.Types.FindMessageByURL(url)
	if errors.Is(err, protoregistry.NotFound) {
		return placeholder(), nil
	}
	return mt, err
}

// placeholder is a message type with no fields, unknown to every registry.
var placeholder = sync.OnceValue(func() protoreflect.MessageType {
	fd, err := protodesc.NewFile(&descriptorpb.FileDescriptorProto{
		Name:        proto.String("sds-bridge/envoyboot/placeholder.proto"),
		Package:     proto.String("sdsbridge.envoyboot"),
		Syntax:      proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{{Name: proto.String("UnknownType")}},
	}, nil)
	if err != nil {
		panic(fmt.Sprintf("envoyboot: placeholder message: %v", err)) // a constant descriptor
	}
	return dynamicpb.NewMessageType(fd.Messages().Get(0))
})

var (
	jsonPosition = regexp.MustCompile(`^proto:[\s\x{00a0}]*(?:syntax error )?(?:\(line \d+:\d+\):[\s\x{00a0}]*)?`)
	quotedName   = regexp.MustCompile(`(?:unknown field|unable to resolve) "([^"]+)"`)
	jsonField    = regexp.MustCompile(`field (\w+): "?([^"]*)`)
	upper        = regexp.MustCompile(`[A-Z]`)
)

// yamlLines rewrites protojson's message, whose positions are in the
// intermediate JSON and whose field names are in JSON's camelCase, to name
// the field as the YAML spells it and the YAML lines where it appears.
func yamlLines(msg string, doc *yaml.Node) string {
	// protojson varies its spacing on purpose (a non-breaking space now and then).
	msg = jsonPosition.ReplaceAllString(msg, "")
	var key, value string
	if m := quotedName.FindStringSubmatch(msg); m != nil {
		key = m[1]
	} else if m := jsonField.FindStringSubmatch(msg); m != nil {
		key = upper.ReplaceAllStringFunc(m[1], func(s string) string { return "_" + strings.ToLower(s) })
		value = m[2]
		msg = strings.Replace(msg, "field "+m[1]+":", "field "+key+":", 1)
	}
	if key == "" {
		return msg
	}
	var lines []int
	var find func(n *yaml.Node)
	find = func(n *yaml.Node) {
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, val := n.Content[i], n.Content[i+1]
				if (k.Value == key && (value == "" || val.Value == value)) || (k.Value == "@type" && val.Value == key) {
					lines = append(lines, k.Line)
				}
			}
		}
		for _, c := range n.Content {
			find(c)
		}
	}
	find(doc)
	if len(lines) == 0 {
		return msg
	}
	slices.Sort(lines)
	lines = slices.Compact(lines)
	if len(lines) > 5 {
		lines = lines[:5]
	}
	s := make([]string, len(lines))
	for i, l := range lines {
		s[i] = fmt.Sprint(l)
	}
	return fmt.Sprintf("%s (YAML line %s)", msg, strings.Join(s, ", "))
}
