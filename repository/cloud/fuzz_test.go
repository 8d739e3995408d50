package cloud

import (
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// FuzzParseURL checks that any repository path parses or fails with an
// error, never panics, and that what parses writes back to a URL that
// parses to the same location, within the bucket and the prefix written.
func FuzzParseURL(f *testing.F) {
	for _, s := range []string{
		"s3://bucket/path", "s3://host:9000/bucket/path", "s3://https://host:443/bucket/a/b/", "s3://[::1]:9/bkt",
		"gs://bucket/p", "as://account/container/p", "s3://bucket//x", "s3://bucket/../x", "hdfs://x", "s3://a@b:1/c",
		"s3://http://", "s3://https://:1/b", "as://", "/local", "s3://bucket/\x00",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := ParseURL(raw)
		if err != nil {
			if len(err.Error()) > 1024 {
				t.Fatalf("error of %d bytes", len(err.Error()))
			}
			return
		}
		if u.Prefix != "" && !strings.HasSuffix(u.Prefix, "/") {
			t.Fatalf("%q: prefix %q does not end in '/'", raw, u.Prefix)
		}
		for seg := range strings.SplitSeq(strings.TrimSuffix(u.Prefix, "/"), "/") {
			if u.Prefix != "" && (seg == "" || seg == "." || seg == "..") {
				t.Fatalf("%q: prefix %q has segment %q", raw, u.Prefix, seg)
			}
		}
		if u.Bucket == "" || strings.ContainsAny(u.Bucket, "/:@") {
			t.Fatalf("%q: bucket %q", raw, u.Bucket)
		}
		again, err := ParseURL(u.String())
		if err != nil {
			t.Fatalf("%q parses to %+v, whose String %q does not parse: %v", raw, u, u.String(), err)
		}
		if again != u {
			t.Fatalf("%q: %+v, and %q parses to %+v", raw, u, u.String(), again)
		}
	})
}

// FuzzObjectKeys checks that whatever keys a bucket lists, the paths the
// mirror would write stay inside its copy, and no path is both a file
// and a directory.
func FuzzObjectKeys(f *testing.F) {
	for _, s := range []string{"repo/a/config.pbtxt\nrepo/a/1/", "repo/../x", "repo/a//b", "repo/a\nrepo/a/b", "repo/\\x", "repo/./a", "repo/"} {
		f.Add(s)
	}
	m := &Mirror{url: URL{Scheme: SchemeS3, Bucket: "bucket", Prefix: "repo/"}}
	f.Fuzz(func(t *testing.T, listing string) {
		var objs []Object
		for k := range strings.SplitSeq(listing, "\n") {
			objs = append(objs, Object{Key: "repo/" + strings.TrimPrefix(k, "repo/")})
		}
		files, dirs, err := m.layout(objs)
		if err != nil {
			return
		}
		for _, p := range append(slices.Sorted(maps.Keys(files)), slices.Sorted(maps.Keys(dirs))...) {
			if !filepath.IsLocal(filepath.FromSlash(p)) || strings.Contains(p, "\\") || strings.Contains(p, "//") {
				t.Fatalf("listing %q: path %q is not a plain path inside the copy", listing, p)
			}
		}
		for p := range files {
			if dirs[p] {
				t.Fatalf("listing %q: %q is both a file and a directory", listing, p)
			}
			for d := parentOf(p); d != ""; d = parentOf(d) {
				if !dirs[d] {
					t.Fatalf("listing %q: the directory %q of %q is missing", listing, d, p)
				}
			}
		}
	})
}
