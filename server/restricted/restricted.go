// Package restricted implements Triton's restricted APIs: groups of
// endpoints that answer only requests carrying a given header with a given
// value (--http-restricted-api and --grpc-restricted-protocol).
package restricted

import (
	"fmt"
	"net/http"
	"net/textproto"
	"strings"

	"github.com/nereid-project/nereid/inference"
)

// Category is a group of endpoints that can be restricted.
type Category string

// Triton's categories (server src/restricted_features.h).
const (
	Health          Category = "health"
	Metadata        Category = "metadata"
	Inference       Category = "inference"
	SharedMemory    Category = "shared-memory"
	ModelConfig     Category = "model-config"
	ModelRepository Category = "model-repository"
	Statistics      Category = "statistics"
	Trace           Category = "trace"
	Logging         Category = "logging"
)

var categories = map[Category]bool{
	Health: true, Metadata: true, Inference: true, SharedMemory: true, ModelConfig: true,
	ModelRepository: true, Statistics: true, Trace: true, Logging: true,
}

// GRPCHeaderPrefix prefixes the key of every gRPC restriction: gRPC
// metadata keys are lower case and Triton namespaces them.
const GRPCHeaderPrefix = "triton-grpc-protocol-"

// Rule is the header a restricted category requires.
type Rule struct {
	Header string // for gRPC, with GRPCHeaderPrefix
	Value  string
}

// Rules maps each restricted category to its header; categories absent
// from the map are open. The zero value restricts nothing.
type Rules map[Category]Rule

// AddHTTP adds one --http-restricted-api value.
func (r Rules) AddHTTP(spec string) error { return r.add(spec, "http-restricted-api", "api", "") }

// AddGRPC adds one --grpc-restricted-protocol value.
func (r Rules) AddGRPC(spec string) error {
	return r.add(spec, "grpc-restricted-protocol", "protocol", GRPCHeaderPrefix)
}

// add parses "<category>[,<category>...]:<key>=<value>" as Triton's
// ParseRestrictedFeatureOption does.
func (r Rules) add(spec, option, feature, prefix string) error {
	format := fmt.Errorf("--%s option format is '<config name>:<setting>=<value>'. Got %s", option, spec)
	names, kv, ok := strings.Cut(spec, ":")
	if !ok {
		return format
	}
	key, value, ok := strings.Cut(kv, "=")
	if !ok || names == "" || key == "" || value == "" {
		return format
	}
	if prefix != "" {
		key = strings.ToLower(key)
	}
	for _, name := range strings.Split(names, ",") {
		c := Category(strings.TrimSpace(name))
		if !categories[c] {
			return fmt.Errorf("unknown restricted %s '%s'", feature, c)
		}
		if _, dup := r[c]; dup {
			return fmt.Errorf("restricted %s '%s' can not be specified in multiple config groups", feature, c)
		}
		r[c] = Rule{Header: prefix + key, Value: value}
	}
	return nil
}

// Allowed reports whether a request to category c may proceed, given a
// function that finds a request header's value. When it may not, rule is
// the header that was expected.
func (r Rules) Allowed(c Category, header func(name string) (string, bool)) (rule Rule, ok bool) {
	rule, restricted := r[c]
	if !restricted {
		return Rule{}, true
	}
	v, found := header(rule.Header)
	return rule, found && v == rule.Value
}

// CheckRequest is Allowed for a net/http request (the long jobs port's
// asynchronous inference and batch jobs): nil when it may proceed, else
// the PermissionDenied error Triton's HTTP port answers (403), naming the
// header.
func (r Rules) CheckRequest(c Category, req *http.Request) error {
	if len(r) == 0 {
		return nil
	}
	rule, ok := r.Allowed(c, func(name string) (string, bool) {
		v := req.Header[textproto.CanonicalMIMEHeaderKey(name)]
		if len(v) == 0 {
			return "", false
		}
		return v[0], true
	})
	if ok {
		return nil
	}
	return inference.PermissionDenied("This API is restricted, expecting header '%s'", rule.Header)
}
