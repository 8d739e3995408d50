package httpfront

import (
	"bytes"
	"net/url"
)

// routeKind names an endpoint.
type routeKind uint8

const (
	routeNotFound routeKind = iota
	routeServerMetadata
	routeHealthLive
	routeHealthReady
	routeStatsAll
	routeModelMetadata
	routeModelReady
	routeModelConfig
	routeModelStats
	routeModelInfer
	routeModelGenerate
	routeModelGenerateStream
	routeModelTrace
	routeRepoIndex
	routeRepoLoad
	routeRepoUnload
	routeSystemShm
	routeCudaShm
	routeTrace
	routeLogging
)

// route is a parsed request path. Names are URL-unescaped (tritonclient
// quotes model names).
type route struct {
	kind    routeKind
	model   string
	version string // raw digits as they appear in the path; "" when absent
	repo    string // repository name in /v2/repository/{repo}/...
	region  string // shared-memory region name
	action  string // shared-memory action: status, register, unregister
}

const maxPathSegments = 8

// parseRoute maps a raw (still escaped) request path to its endpoint
// without regular expressions, matching the paths Triton's regexes accept:
// every segment non-empty, no trailing slash, versions made of digits.
func parseRoute(path []byte) route {
	var segs [maxPathSegments][]byte
	n := 0
	if len(path) == 0 || path[0] != '/' {
		return route{}
	}
	rest := path[1:]
	for {
		if n == maxPathSegments {
			return route{}
		}
		i := bytes.IndexByte(rest, '/')
		var seg []byte
		if i < 0 {
			seg = rest
		} else {
			seg = rest[:i]
		}
		if len(seg) == 0 {
			return route{}
		}
		segs[n] = seg
		n++
		if i < 0 {
			break
		}
		rest = rest[i+1:]
	}
	s := segs[:n]
	if string(s[0]) != "v2" {
		return route{}
	}
	if n == 1 {
		return route{kind: routeServerMetadata}
	}
	switch string(s[1]) {
	case "health":
		if n == 3 {
			switch string(s[2]) {
			case "live":
				return route{kind: routeHealthLive}
			case "ready":
				return route{kind: routeHealthReady}
			}
		}
	case "models":
		return parseModelRoute(s[2:])
	case "repository":
		return parseRepositoryRoute(s[2:])
	case "systemsharedmemory":
		return parseShmRoute(routeSystemShm, s[2:])
	case "cudasharedmemory":
		return parseShmRoute(routeCudaShm, s[2:])
	case "trace":
		if n == 3 && string(s[2]) == "setting" {
			return route{kind: routeTrace}
		}
	case "logging":
		if n == 2 {
			return route{kind: routeLogging}
		}
	}
	return route{}
}

// parseModelRoute handles the segments after /v2/models.
func parseModelRoute(s [][]byte) route {
	if len(s) == 0 {
		return route{}
	}
	// Triton answers /v2/models/stats before trying it as a model name.
	if len(s) == 1 && string(s[0]) == "stats" {
		return route{kind: routeStatsAll}
	}
	r := route{model: unescape(s[0])}
	s = s[1:]
	if len(s) >= 2 && string(s[0]) == "versions" && isDigits(s[1]) {
		r.version = string(s[1])
		s = s[2:]
	}
	switch len(s) {
	case 0:
		r.kind = routeModelMetadata
	case 1:
		switch string(s[0]) {
		case "ready":
			r.kind = routeModelReady
		case "infer":
			r.kind = routeModelInfer
		case "config":
			r.kind = routeModelConfig
		case "stats":
			r.kind = routeModelStats
		case "generate":
			r.kind = routeModelGenerate
		case "generate_stream":
			r.kind = routeModelGenerateStream
		}
	case 2:
		// Trace settings take no version in Triton.
		if string(s[0]) == "trace" && string(s[1]) == "setting" && r.version == "" {
			r.kind = routeModelTrace
		}
	}
	if r.kind == routeNotFound {
		return route{}
	}
	return r
}

// parseRepositoryRoute handles the segments after /v2/repository:
// [repo/]index and [repo/]models/{m}/(load|unload).
func parseRepositoryRoute(s [][]byte) route {
	switch len(s) {
	case 1:
		if string(s[0]) == "index" {
			return route{kind: routeRepoIndex}
		}
	case 2:
		if string(s[1]) == "index" {
			return route{kind: routeRepoIndex, repo: unescape(s[0])}
		}
	case 3:
		if string(s[0]) == "models" {
			return repoControl(s[1], s[2], "")
		}
	case 4:
		if string(s[1]) == "models" {
			return repoControl(s[2], s[3], unescape(s[0]))
		}
	}
	return route{}
}

func repoControl(model, action []byte, repo string) route {
	switch string(action) {
	case "load":
		return route{kind: routeRepoLoad, model: unescape(model), repo: repo}
	case "unload":
		return route{kind: routeRepoUnload, model: unescape(model), repo: repo}
	}
	return route{}
}

// parseShmRoute handles [region/{r}/](status|register|unregister).
func parseShmRoute(kind routeKind, s [][]byte) route {
	var r route
	switch {
	case len(s) == 1:
	case len(s) == 3 && string(s[0]) == "region":
		r.region = unescape(s[1])
		s = s[2:]
	default:
		return route{}
	}
	switch string(s[0]) {
	case "status", "register", "unregister":
		r.kind = kind
		r.action = string(s[0])
		return r
	}
	return route{}
}

func isDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(b) > 0
}

// unescape URL-decodes a path segment; a segment that is not valid
// percent-encoding is used as it is, as Triton would.
func unescape(seg []byte) string {
	if bytes.IndexByte(seg, '%') < 0 {
		return string(seg)
	}
	u, err := url.PathUnescape(string(seg))
	if err != nil {
		return string(seg)
	}
	return u
}
