// Package cloud copies model repositories kept in object stores into local
// directories: a Mirror lists an s3:// location, fetches the objects that
// are new or changed since its last sync and removes the files of objects
// that are gone, so that the repository package reads the copy as it reads
// any directory. ParseURL reads the repository URLs Triton accepts.
package cloud

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nereid-project/nereid/inference"
)

// The schemes of Triton's cloud repositories.
const (
	SchemeS3    = "s3"
	SchemeGCS   = "gs"
	SchemeAzure = "as"
)

// maxURLLen bounds a repository URL; object keys are at most 1024 bytes.
const maxURLLen = 2048

// URL is a parsed cloud repository location.
type URL struct {
	// Scheme is SchemeS3, SchemeGCS or SchemeAzure.
	Scheme string
	// Endpoint is the object store's base URL ("http://host:port") for an
	// S3-protocol server named in the URL; "" means the provider's own.
	Endpoint string
	// Account is the Azure storage account; "" for the other schemes.
	Account string
	// Bucket is the S3 or GCS bucket, or the Azure container.
	Bucket string
	// Prefix is the key prefix of the repository's objects: "" for the
	// whole bucket, else ending in "/".
	Prefix string
}

// String writes the URL back in Triton's form.
func (u URL) String() string {
	var b strings.Builder
	b.WriteString(u.Scheme + "://")
	if u.Endpoint != "" {
		b.WriteString(u.Endpoint + "/")
	}
	if u.Account != "" {
		b.WriteString(u.Account + "/")
	}
	b.WriteString(u.Bucket)
	if u.Prefix != "" {
		b.WriteString("/" + strings.TrimSuffix(u.Prefix, "/"))
	}
	return b.String()
}

// Scheme returns the scheme of a repository path written as a URL
// ("<scheme>://…"), lower-cased; ok is false for a local path.
func Scheme(path string) (scheme string, ok bool) {
	i := strings.Index(path, "://")
	if i <= 0 {
		return "", false
	}
	for j, c := range path[:i] {
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !letter && (j == 0 || !(c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return "", false
		}
	}
	return strings.ToLower(path[:i]), true
}

// ParseURL reads a cloud repository URL as Triton writes them:
//
//	s3://bucket/path
//	s3://host:port/bucket/path           (an S3-protocol server, over HTTP)
//	s3://https://host:port/bucket/path   (the same over HTTPS; http:// too)
//	gs://bucket/path
//	as://account/container/path
//
// Errors are InvalidArg and name what is wrong; a scheme other than these
// three is refused as not supported.
func ParseURL(raw string) (URL, error) {
	scheme, ok := Scheme(raw)
	if !ok {
		return URL{}, inference.InvalidArg("model repository '%s' is not a URL (<scheme>://…)", shown(raw))
	}
	if len(raw) > maxURLLen {
		return URL{}, inference.InvalidArg("model repository URL '%s' is longer than %d bytes", shown(raw), maxURLLen)
	}
	for i, c := range raw {
		if c < 0x20 || c == 0x7f {
			return URL{}, inference.InvalidArg("model repository URL '%s…' contains a control character (byte %d)", shown(raw[:i]), i)
		}
	}
	rest := raw[len(scheme)+3:]
	if first, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(rest, "https://"), "http://"), "/"); strings.Contains(first, "@") {
		return URL{}, urlError(raw, errors.New("credentials in the URL are not supported: use the provider's environment variables or files"))
	}
	var (
		u   = URL{Scheme: scheme}
		err error
	)
	switch scheme {
	case SchemeS3:
		u.Endpoint, rest, err = splitEndpoint(rest)
		if err != nil {
			return URL{}, urlError(raw, err)
		}
	case SchemeGCS:
	case SchemeAzure:
		u.Account, rest, _ = strings.Cut(rest, "/")
		if err := checkAzureAccount(u.Account); err != nil {
			return URL{}, urlError(raw, err)
		}
	default:
		return URL{}, inference.InvalidArg("model repository '%s': scheme '%s' is not supported (s3://, gs:// and as:// are Triton's cloud schemes; anything else is a local path)",
			shown(raw), clip(scheme))
	}
	bucket, path, _ := strings.Cut(rest, "/")
	if err := checkBucket(scheme, bucket); err != nil {
		return URL{}, urlError(raw, err)
	}
	u.Bucket = bucket
	if u.Prefix, err = keyPrefix(path); err != nil {
		return URL{}, urlError(raw, err)
	}
	return u, nil
}

func urlError(raw string, err error) error {
	return inference.InvalidArg("model repository URL '%s': %v", shown(raw), err)
}

// shown is a URL as errors echo it: clipped, and with anything that may
// be credentials ("user:password@") left out.
func shown(raw string) string {
	for {
		at := strings.Index(raw, "@")
		if at < 0 {
			return clip(raw)
		}
		start := strings.LastIndex(raw[:at], "/") + 1
		raw = raw[:start] + "…" + raw[at+1:]
	}
}

// clip bounds what an error echoes of its input.
func clip(s string) string {
	const limit = 256
	if len(s) <= limit {
		return s
	}
	return s[:limit] + "…"
}

// splitEndpoint takes the S3 endpoint off the front of an s3:// URL's
// remainder: "http[s]://host[:port]/" or "host:port/". Without either
// the first segment is the bucket and the endpoint is AWS's.
func splitEndpoint(rest string) (endpoint, after string, err error) {
	proto := "http"
	explicit := false
	for _, p := range []string{"http", "https"} {
		if r, ok := strings.CutPrefix(rest, p+"://"); ok {
			proto, rest, explicit = p, r, true
			break
		}
	}
	authority, after, _ := strings.Cut(rest, "/")
	host, port, hasPort := splitHostPort(authority)
	if !hasPort && !explicit {
		return "", rest, nil // s3://bucket/path
	}
	if err := checkHost(host); err != nil {
		return "", "", err
	}
	if hasPort {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || port[0] == '0' {
			return "", "", fmt.Errorf("port '%s' of endpoint '%s' is not a port number", clip(port), clip(authority))
		}
	}
	return proto + "://" + authority, after, nil
}

// splitHostPort splits "host:port" and "[v6]:port"; ok is false when
// there is no port.
func splitHostPort(a string) (host, port string, ok bool) {
	if strings.HasPrefix(a, "[") {
		end := strings.Index(a, "]")
		if end < 0 {
			return a, "", false
		}
		host, rest := a[:end+1], a[end+1:]
		if p, ok := strings.CutPrefix(rest, ":"); ok {
			return host, p, true
		}
		return host, "", false
	}
	i := strings.LastIndex(a, ":")
	if i < 0 {
		return a, "", false
	}
	return a[:i], a[i+1:], true
}

func checkHost(h string) error {
	if h == "" {
		return fmt.Errorf("the endpoint has no host")
	}
	if strings.HasPrefix(h, "[") {
		if !strings.HasSuffix(h, "]") || len(h) < 4 {
			return fmt.Errorf("endpoint host '%s' is not a bracketed IPv6 address", clip(h))
		}
		for _, c := range h[1 : len(h)-1] {
			if !(isHex(c) || c == ':' || c == '.') {
				return fmt.Errorf("endpoint host '%s' is not a bracketed IPv6 address", clip(h))
			}
		}
		return nil
	}
	if len(h) > 253 {
		return fmt.Errorf("endpoint host is longer than 253 characters")
	}
	for _, c := range h {
		if !(isAlnum(c) || c == '-' || c == '.') {
			return fmt.Errorf("endpoint host '%s' has a character other than letters, digits, '-' and '.'", clip(h))
		}
	}
	return nil
}

// checkBucket applies the providers' bucket (container) naming rules:
// 3 to 63 lower-case letters, digits, '-' and (S3, GCS) '.', starting and
// ending with a letter or digit.
func checkBucket(scheme, b string) error {
	what := "bucket"
	if scheme == SchemeAzure {
		what = "container"
	}
	if b == "" {
		return fmt.Errorf("no %s name", what)
	}
	if len(b) < 3 || len(b) > 63 {
		return fmt.Errorf("%s name '%s' must be 3 to 63 characters long", what, clip(b))
	}
	for _, c := range b {
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' && scheme != SchemeAzure
		if scheme == SchemeGCS && c == '_' {
			ok = true
		}
		if !ok {
			seps := map[string]string{SchemeS3: "'-' and '.'", SchemeGCS: "'-', '_' and '.'", SchemeAzure: "'-'"}[scheme]
			return fmt.Errorf("%s name '%s' may hold only lower-case letters, digits, %s", what, clip(b), seps)
		}
	}
	if !isAlnum(rune(b[0])) || !isAlnum(rune(b[len(b)-1])) {
		return fmt.Errorf("%s name '%s' must start and end with a letter or digit", what, b)
	}
	return nil
}

func checkAzureAccount(a string) error {
	if len(a) < 3 || len(a) > 24 {
		return fmt.Errorf("storage account name '%s' must be 3 to 24 characters long", clip(a))
	}
	for _, c := range a {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return fmt.Errorf("storage account name '%s' may hold only lower-case letters and digits", clip(a))
		}
	}
	return nil
}

// keyPrefix turns the path part of a URL into the key prefix of the
// repository's objects. Empty, "." and ".." segments are refused: they
// would name another place than the one written.
func keyPrefix(path string) (string, error) {
	path = strings.TrimSuffix(path, "/")
	if path == "" {
		return "", nil
	}
	for seg := range strings.SplitSeq(path, "/") {
		switch seg {
		case "":
			return "", fmt.Errorf("the path has an empty segment ('//')")
		case ".", "..":
			return "", fmt.Errorf("the path has a '%s' segment", seg)
		}
	}
	return path + "/", nil
}

func isAlnum(c rune) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func isHex(c rune) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}
