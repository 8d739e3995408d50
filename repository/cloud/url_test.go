package cloud

import (
	"strings"
	"testing"

	"github.com/nereid-project/nereid/inference"
)

func TestParseURL(t *testing.T) {
	good := []struct {
		in   string
		want URL
	}{
		{"s3://bucket", URL{Scheme: "s3", Bucket: "bucket"}},
		{"s3://bucket/", URL{Scheme: "s3", Bucket: "bucket"}},
		{"s3://my.bucket-1/path/to/repo", URL{Scheme: "s3", Bucket: "my.bucket-1", Prefix: "path/to/repo/"}},
		{"s3://my-bucket/path/to/repo/", URL{Scheme: "s3", Bucket: "my-bucket", Prefix: "path/to/repo/"}},
		{"s3://localhost:9000/models/repo", URL{Scheme: "s3", Endpoint: "http://localhost:9000", Bucket: "models", Prefix: "repo/"}},
		{"s3://127.0.0.1:9000/models", URL{Scheme: "s3", Endpoint: "http://127.0.0.1:9000", Bucket: "models"}},
		{"s3://https://minio.example.com:443/models/a", URL{Scheme: "s3", Endpoint: "https://minio.example.com:443", Bucket: "models", Prefix: "a/"}},
		{"s3://http://minio:9000/models", URL{Scheme: "s3", Endpoint: "http://minio:9000", Bucket: "models"}},
		{"s3://https://s3.example.com/models", URL{Scheme: "s3", Endpoint: "https://s3.example.com", Bucket: "models"}},
		{"s3://[::1]:9000/models/x", URL{Scheme: "s3", Endpoint: "http://[::1]:9000", Bucket: "models", Prefix: "x/"}},
		{"gs://bucket_a/path", URL{Scheme: "gs", Bucket: "bucket_a", Prefix: "path/"}},
		{"as://account1/container/path/to", URL{Scheme: "as", Account: "account1", Bucket: "container", Prefix: "path/to/"}},
		{"S3://bucket/x", URL{Scheme: "s3", Bucket: "bucket", Prefix: "x/"}},
	}
	for _, c := range good {
		got, err := ParseURL(c.in)
		if err != nil {
			t.Errorf("%s: %v", c.in, err)
			continue
		}
		if got != c.want {
			t.Errorf("%s: %+v, want %+v", c.in, got, c.want)
		}
		again, err := ParseURL(got.String())
		if err != nil || again != got {
			t.Errorf("%s: String() %q parses to %+v, %v", c.in, got.String(), again, err)
		}
	}
	bad := []struct{ in, want string }{
		{"hdfs://namenode/models", "scheme 'hdfs' is not supported"},
		{"file:///models", "scheme 'file' is not supported"},
		{"s3://", "no bucket name"},
		{"s3://ab/x", "3 to 63 characters"},
		{"s3://Bucket/x", "may hold only lower-case letters"},
		{"s3://-bucket/x", "start and end with a letter or digit"},
		{"s3://bucket//x", "empty segment"},
		{"s3://bucket/a/../b", "'..' segment"},
		{"s3://bucket/./b", "'.' segment"},
		{"s3://host:0/bucket", "not a port number"},
		{"s3://host:99999/bucket", "not a port number"},
		{"s3://host:x9/bucket", "not a port number"},
		{"s3://:9000/bucket", "no host"},
		{"s3://user:secret@host:9000/bucket", "credentials in the URL"},
		{"s3://user:secret@bucket/x", "credentials in the URL"},
		{"s3://https://user:secret@host/bucket", "credentials in the URL"},
		{"gs://user:secret@bucket/x", "credentials in the URL"},
		{"as://user:secret@account/container", "credentials in the URL"},
		{"s3://ho_st:9000/bucket", "endpoint host"},
		{"s3://localhost:9000", "no bucket name"},
		{"s3://bucket/a\x00b", "control character"},
		{"as://Account/container", "storage account name"},
		{"as://account1", "no container name"},
		{"as://account1/con.tainer", "may hold only lower-case letters, digits, '-'"},
		{"s3://bucket/" + strings.Repeat("a", maxURLLen), "longer than"},
		{"/local/path", "not a URL"},
	}
	for _, c := range bad {
		_, err := ParseURL(c.in)
		if err == nil {
			t.Errorf("%q: accepted", c.in)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want it to say %q", c.in, err, c.want)
		}
		if inference.CodeOf(err) != inference.CodeInvalidArg {
			t.Errorf("%q: code %v, want InvalidArg", c.in, inference.CodeOf(err))
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("%q: the error echoes the credentials: %v", c.in, err)
		}
	}
}

func TestScheme(t *testing.T) {
	for in, want := range map[string]string{"s3://b": "s3", "GS://b": "gs", "x+y.z-1://": "x+y.z-1"} {
		if got, ok := Scheme(in); !ok || got != want {
			t.Errorf("Scheme(%q) = %q, %v", in, got, ok)
		}
	}
	for _, in := range []string{"/models", "models", "./s3://x", "1s3://b", "://b", "C:\\models", "a b://x"} {
		if s, ok := Scheme(in); ok {
			t.Errorf("Scheme(%q) = %q: a local path taken for a URL", in, s)
		}
	}
}
