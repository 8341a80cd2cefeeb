package message

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// MaxDocumentSize bounds a message or metadata file before it is parsed.
const MaxDocumentSize = 1 << 20

// maxNodes bounds the number of YAML nodes a document may expand to,
// counting every alias expansion, so an alias bomb fails before it costs
// memory.
const maxNodes = 100_000

// maxExpandedBytes bounds the scalar text a document may expand to through
// aliases. Without aliases it is at most the document size.
const maxExpandedBytes = 2 * MaxDocumentSize

// ErrTooLarge is returned for documents above MaxDocumentSize.
var ErrTooLarge = errors.New("document exceeds 1 MiB")

// ErrAliasBomb is returned for documents whose aliases expand beyond a bound.
var ErrAliasBomb = errors.New("document expands beyond the node or size limit (alias bomb?)")

// FieldError names the field of a document that failed validation.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// parseMap parses data as one YAML mapping, refusing oversized documents and
// alias bombs.
func parseMap(data []byte) (fields, error) {
	if len(data) > MaxDocumentSize {
		return nil, ErrTooLarge
	}
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty document")
		}
		return nil, oneLine("not YAML", err)
	}
	if root.Kind == 0 {
		return nil, errors.New("empty document")
	}
	// PyYAML's safe_load refuses a stream of several documents; taking the
	// first and dropping the rest would let two readers disagree.
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		return nil, errors.New("not YAML: more than one document")
	}
	var e expansion
	if !countNodes(&root, &e, 0) {
		return nil, ErrAliasBomb
	}
	doc := &root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	if doc.Kind != yaml.MappingNode {
		return nil, errors.New("document is not a mapping")
	}
	yaml11Strings(doc)
	var m map[string]any
	if err := doc.Decode(&m); err != nil {
		return nil, oneLine("decode mapping", err)
	}
	return fields(m), nil
}

// expansion is what a document costs once every alias is resolved.
type expansion struct {
	nodes int
	bytes int
}

// countNodes walks n as a decoder would, following aliases, and reports
// false as soon as the expansion exceeds maxNodes nodes, maxExpandedBytes of
// scalar text or a nesting depth of 100. Counting bytes matters as much as
// counting nodes: a few thousand aliases of one long string stay far below
// the node bound but turn a 1 MiB message into gigabytes for whoever
// re-encodes or prints it.
func countNodes(n *yaml.Node, e *expansion, depth int) bool {
	e.nodes++
	e.bytes += len(n.Value)
	if e.nodes > maxNodes || e.bytes > maxExpandedBytes || depth > 100 {
		return false
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		return countNodes(n.Alias, e, depth+1)
	}
	for _, c := range n.Content {
		if !countNodes(c, e, depth+1) {
			return false
		}
	}
	return true
}

// lineError carries a wrapped error whose text was folded onto one line.
type lineError struct {
	msg string
	err error
}

func (e *lineError) Error() string { return e.msg }
func (e *lineError) Unwrap() error { return e.err }

// oneLine wraps err as "op: err" on a single line: yaml.v3 lists unmarshal
// errors (duplicate keys, complex keys) on separate lines, and every decode
// error ends up as one log line and one response message.
func oneLine(op string, err error) error {
	msg := strings.Join(strings.Fields(err.Error()), " ")
	return &lineError{msg: op + ": " + msg, err: err}
}

// The plain scalars PyYAML (YAML 1.1) resolves to int and float, from its
// resolver.py.
var (
	yaml11Int   = regexp.MustCompile(`^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$`)
	yaml11Float = regexp.MustCompile(`^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$`)
)

// yaml11Strings retags plain scalars that yaml.v3 (YAML 1.2) reads as numbers
// but PyYAML reads as strings, such as 1e3 or 0o17. The original services
// write those strings unquoted, and a message that Python reads as text must
// not be refused here as "must be a string, got number".
func yaml11Strings(n *yaml.Node) {
	if n.Kind == yaml.ScalarNode && n.Style == 0 {
		if tag := n.ShortTag(); (tag == "!!int" || tag == "!!float") &&
			!yaml11Int.MatchString(n.Value) && !yaml11Float.MatchString(n.Value) {
			n.Tag = "!!str"
		}
	}
	for _, c := range n.Content {
		yaml11Strings(c)
	}
}

// fields is a decoded mapping with typed, field-naming accessors.
type fields map[string]any

func join(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

// str returns the string at key. A required key that is missing or empty is
// an error; so is a value of another type. Numbers and booleans are refused:
// a request id of 12 is a sender bug, not a string.
func (f fields) str(prefix, key string, required bool) (string, error) {
	v, ok := f[key]
	if !ok || v == nil {
		if required {
			return "", &FieldError{join(prefix, key), "required"}
		}
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", &FieldError{join(prefix, key), fmt.Sprintf("must be a string, got %s", typeName(v))}
	}
	if required && strings.TrimSpace(s) == "" {
		return "", &FieldError{join(prefix, key), "required"}
	}
	if strings.ContainsAny(s, "\x00") {
		return "", &FieldError{join(prefix, key), "contains a NUL byte"}
	}
	return s, nil
}

func (f fields) number(prefix, key string, required bool) (float64, error) {
	v, ok := f[key]
	if !ok || v == nil {
		if required {
			return 0, &FieldError{join(prefix, key), "required"}
		}
		return 0, nil
	}
	switch n := v.(type) {
	case int:
		return float64(n), nil
	case int64:
		return float64(n), nil
	case uint64:
		return float64(n), nil
	case float64:
		// .nan and .inf are YAML floats but no version number; NaN would
		// also break every equality check on the decoded message.
		if math.IsNaN(n) || math.IsInf(n, 0) {
			return 0, &FieldError{join(prefix, key), "must be a finite number"}
		}
		return n, nil
	}
	return 0, &FieldError{join(prefix, key), fmt.Sprintf("must be a number, got %s", typeName(v))}
}

func (f fields) integer(prefix, key string) (int, error) {
	v, ok := f[key]
	if !ok || v == nil {
		return 0, nil
	}
	switch n := v.(type) {
	case int:
		return n, nil
	case int64:
		return int(n), nil
	case uint64:
		return int(n), nil
	}
	return 0, &FieldError{join(prefix, key), fmt.Sprintf("must be an integer, got %s", typeName(v))}
}

func (f fields) boolean(prefix, key string) (bool, error) {
	v, ok := f[key]
	if !ok || v == nil {
		return false, nil
	}
	b, ok := v.(bool)
	if !ok {
		return false, &FieldError{join(prefix, key), fmt.Sprintf("must be a boolean, got %s", typeName(v))}
	}
	return b, nil
}

// sub returns the mapping at key, nil when absent.
func (f fields) sub(prefix, key string) (fields, error) {
	v, ok := f[key]
	if !ok || v == nil {
		return nil, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, &FieldError{join(prefix, key), fmt.Sprintf("must be a mapping, got %s", typeName(v))}
	}
	return fields(m), nil
}

func (f fields) list(prefix, key string) ([]any, error) {
	v, ok := f[key]
	if !ok || v == nil {
		return nil, nil
	}
	l, ok := v.([]any)
	if !ok {
		return nil, &FieldError{join(prefix, key), fmt.Sprintf("must be a list, got %s", typeName(v))}
	}
	return l, nil
}

func (f fields) strings(prefix, key string) ([]string, error) {
	l, err := f.list(prefix, key)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(l))
	for i, v := range l {
		s, ok := v.(string)
		if !ok {
			return nil, &FieldError{fmt.Sprintf("%s[%d]", join(prefix, key), i), fmt.Sprintf("must be a string, got %s", typeName(v))}
		}
		out = append(out, s)
	}
	return out, nil
}

func typeName(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case int, int64, uint64, float64:
		return "number"
	case bool:
		return "boolean"
	case []any:
		return "list"
	case map[string]any:
		return "mapping"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

// firstErr returns the first non-nil error.
func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
