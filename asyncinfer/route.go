package asyncinfer

import (
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"strings"
)

// routeKind names an endpoint of the service.
type routeKind uint8

const (
	routeNotFound routeKind = iota
	routeSubmit             // POST /v2/models/{m}[/versions/{v}]/infer
	routeRequest            // GET, DELETE /v2/async/requests/{id}
	routeResult             // GET /v2/async/results/{id}
)

// route is a parsed request path; the model name is URL-unescaped.
type route struct {
	kind    routeKind
	model   string
	version string
	id      string
}

// Paths of the status and result endpoints, followed by an id.
const (
	requestsPath = "/v2/async/requests/"
	resultsPath  = "/v2/async/results/"
)

// parseRoute maps a raw (still escaped) path to its endpoint: every
// segment non-empty, versions made of digits, ids as newID makes them.
func parseRoute(path string) route {
	if id, ok := strings.CutPrefix(path, requestsPath); ok {
		if validID(id) {
			return route{kind: routeRequest, id: id}
		}
		return route{}
	}
	if id, ok := strings.CutPrefix(path, resultsPath); ok {
		if validID(id) {
			return route{kind: routeResult, id: id}
		}
		return route{}
	}
	rest, ok := strings.CutPrefix(path, "/v2/models/")
	if !ok {
		return route{}
	}
	segs := strings.Split(rest, "/")
	var r route
	switch {
	case len(segs) == 2 && segs[1] == "infer":
	case len(segs) == 4 && segs[1] == "versions" && segs[3] == "infer" && digits(segs[2]):
		r.version = segs[2]
	default:
		return route{}
	}
	model, err := url.PathUnescape(segs[0])
	if err != nil || model == "" {
		return route{}
	}
	r.kind, r.model = routeSubmit, model
	return r
}

func digits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// idBytes is the randomness of an id: ids are not guessable, so that one
// client cannot read or delete another's results by counting.
const idBytes = 16

// newID returns a fresh request id: 32 lower-case hex digits.
func newID() string {
	var b [idBytes]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// validID reports whether s has the form of an id, which also makes it a
// safe file name.
func validID(s string) bool {
	if len(s) != 2*idBytes {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
