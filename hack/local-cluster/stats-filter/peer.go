// peer.go: workload metadata for the meshops stats filter and its exchange over HTTP headers.
//
// A workload is described by the node metadata pilot-agent gives its Envoy (NAMESPACE,
// WORKLOAD_NAME, LABELS, CLUSTER_ID, SERVICE_ACCOUNT). In place of Istio's metadata exchange
// filter, which upstream Envoy lacks, each side sends its own description to the peer in the
// x-meshops-peer header: base64 (standard alphabet) of a flat, compact JSON object with the
// keys listed in peerKeys. The tiny JSON reader and writer here handle exactly that shape
// (an object of string values; other values are skipped), so the module does not need
// encoding/json and its reflection.
package main

import (
	"encoding/base64"
	"strconv"
	"strings"
)

const peerHeader = "x-meshops-peer"

const unknown = "unknown"

type workload struct {
	namespace         string
	name              string
	app               string
	version           string
	canonicalService  string
	canonicalRevision string
	cluster           string
	serviceAccount    string
}

// peerKeys is the order of the keys in the exchanged JSON.
var peerKeys = []string{"namespace", "workload", "app", "version", "canonical_service", "canonical_revision", "cluster", "service_account"}

func (w *workload) fields() []*string {
	return []*string{&w.namespace, &w.name, &w.app, &w.version, &w.canonicalService, &w.canonicalRevision, &w.cluster, &w.serviceAccount}
}

// unknownWorkload is what a side reports for a peer that sent no (readable) metadata.
func unknownWorkload() *workload {
	w := &workload{}
	for _, f := range w.fields() {
		*f = unknown
	}
	return w
}

// fillUnknown replaces empty fields with "unknown".
func (w *workload) fillUnknown() {
	for _, f := range w.fields() {
		if *f == "" {
			*f = unknown
		}
	}
}

// selfWorkload reads this proxy's own workload from its node metadata. ok is false when the
// node metadata could not be read at all (no NAMESPACE and no WORKLOAD_NAME).
func selfWorkload() (*workload, bool) {
	// Envoy 1.40 serves the node as xds.node (older hosts had it as node); a nested
	// Struct field is one more path segment, and a label's key is one segment whatever
	// dots or slashes it holds.
	root := []string{"xds", "node", "metadata"}
	if _, ok := getProperty("xds", "node", "id"); !ok {
		root = []string{"node", "metadata"}
	}
	meta := func(keys ...string) string {
		return propString(append(append([]string(nil), root...), keys...)...)
	}
	w := &workload{
		namespace:      meta("NAMESPACE"),
		name:           meta("WORKLOAD_NAME"),
		cluster:        meta("CLUSTER_ID"),
		serviceAccount: meta("SERVICE_ACCOUNT"),
		app:            meta("LABELS", "app"),
		version:        meta("LABELS", "version"),
	}
	ok := w.namespace != "" || w.name != ""
	// Istio's rules: canonical service is the canonical-name label, else the app label, else
	// the workload name; canonical revision the canonical-revision label, else the version
	// label, else "latest".
	w.canonicalService = meta("LABELS", "service.istio.io/canonical-name")
	if w.canonicalService == "" {
		w.canonicalService = w.app
	}
	if w.canonicalService == "" {
		w.canonicalService = w.name
	}
	w.canonicalRevision = meta("LABELS", "service.istio.io/canonical-revision")
	if w.canonicalRevision == "" {
		w.canonicalRevision = w.version
	}
	if w.canonicalRevision == "" {
		w.canonicalRevision = "latest"
	}
	w.fillUnknown()
	return w, ok
}

// encodePeer is the header value describing w.
func encodePeer(w *workload) string {
	vals := w.fields()
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range peerKeys {
		if i > 0 {
			b.WriteByte(',')
		}
		writeJSONString(&b, k)
		b.WriteByte(':')
		writeJSONString(&b, *vals[i])
	}
	b.WriteByte('}')
	return base64.StdEncoding.EncodeToString([]byte(b.String()))
}

// decodePeer reads a header value written by encodePeer; ok is false for anything else.
func decodePeer(v string) (*workload, bool) {
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(v))
	if err != nil {
		return nil, false
	}
	m, ok := parseFlatJSON(string(raw))
	if !ok {
		return nil, false
	}
	w := &workload{}
	vals := w.fields()
	for i, k := range peerKeys {
		*vals[i] = m[k]
	}
	w.fillUnknown()
	return w, true
}

func writeJSONString(b *strings.Builder, s string) {
	const hex = "0123456789abcdef"
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20:
			b.WriteString(`\u00`)
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
}

// parseFlatJSON reads one JSON object and returns its string-valued members; members of any
// other type are skipped. ok is false when the text is not a JSON object.
func parseFlatJSON(s string) (map[string]string, bool) {
	p := &jsonParser{s: s}
	p.space()
	if !p.eat('{') {
		return nil, false
	}
	out := map[string]string{}
	p.space()
	if p.eat('}') {
		return out, p.end()
	}
	for {
		p.space()
		k, ok := p.str()
		if !ok {
			return nil, false
		}
		p.space()
		if !p.eat(':') {
			return nil, false
		}
		p.space()
		if p.peek() == '"' {
			v, ok := p.str()
			if !ok {
				return nil, false
			}
			out[k] = v
		} else if !p.skipValue() {
			return nil, false
		}
		p.space()
		if p.eat(',') {
			continue
		}
		if p.eat('}') {
			return out, p.end()
		}
		return nil, false
	}
}

type jsonParser struct {
	s string
	i int
}

func (p *jsonParser) peek() byte {
	if p.i < len(p.s) {
		return p.s[p.i]
	}
	return 0
}

func (p *jsonParser) eat(c byte) bool {
	if p.peek() == c && p.i < len(p.s) {
		p.i++
		return true
	}
	return false
}

func (p *jsonParser) space() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t' || p.s[p.i] == '\n' || p.s[p.i] == '\r') {
		p.i++
	}
}

func (p *jsonParser) end() bool {
	p.space()
	return p.i == len(p.s)
}

func (p *jsonParser) str() (string, bool) {
	if !p.eat('"') {
		return "", false
	}
	var b strings.Builder
	for p.i < len(p.s) {
		c := p.s[p.i]
		p.i++
		switch {
		case c == '"':
			return b.String(), true
		case c == '\\':
			if p.i >= len(p.s) {
				return "", false
			}
			e := p.s[p.i]
			p.i++
			switch e {
			case '"', '\\', '/':
				b.WriteByte(e)
			case 'b':
				b.WriteByte('\b')
			case 'f':
				b.WriteByte('\f')
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			case 'u':
				if p.i+4 > len(p.s) {
					return "", false
				}
				r, err := strconv.ParseUint(p.s[p.i:p.i+4], 16, 32)
				if err != nil {
					return "", false
				}
				p.i += 4
				b.WriteRune(rune(r))
			default:
				return "", false
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", false
}

// skipValue skips a non-string JSON value (number, literal, array or object).
func (p *jsonParser) skipValue() bool {
	switch c := p.peek(); {
	case c == '"':
		_, ok := p.str()
		return ok
	case c == '{' || c == '[':
		depth := 0
		for p.i < len(p.s) {
			switch p.peek() {
			case '"':
				if _, ok := p.str(); !ok {
					return false
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
			}
			p.i++
			if depth == 0 {
				return true
			}
		}
		return false
	default:
		start := p.i
		for p.i < len(p.s) && !strings.ContainsRune(",}] \t\r\n", rune(p.s[p.i])) {
			p.i++
		}
		return p.i > start
	}
}
