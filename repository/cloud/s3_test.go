package cloud_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/repository/cloud"
	"github.com/nereid-project/nereid/repository/cloud/cloudtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// open returns a mirror of s3://<server>/<bucket>/models under a test
// directory, through the real S3 client.
func open(t *testing.T, srv *cloudtest.Server, bucket string) (*cloud.Mirror, *cloud.S3) {
	t.Helper()
	u, err := cloud.ParseURL("s3://" + srv.HostPort + "/" + bucket + "/models")
	if err != nil {
		t.Fatal(err)
	}
	store, err := cloud.NewS3(t.Context(), u, cloud.S3Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	m, err := cloud.NewMirror(u, store, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return m, store
}

// tree lists the files of a directory as "path=content" and the empty
// directories as "path/".
func tree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if info.IsDir() {
			if entries, _ := os.ReadDir(p); len(entries) == 0 {
				out = append(out, rel+"/")
			}
			return nil
		}
		data, err := os.ReadFile(p)
		out = append(out, rel+"="+string(data))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

func sync(t *testing.T, m *cloud.Mirror) cloud.SyncReport {
	t.Helper()
	rep, err := m.Sync(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func wantTree(t *testing.T, dir string, want ...string) {
	t.Helper()
	if got := tree(t, dir); !slices.Equal(got, want) {
		t.Errorf("local copy:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestMirrorSync copies a bucket prefix and follows its changes: new,
// changed and deleted objects, directory markers, a local file removed
// behind the mirror's back, and objects outside the prefix left alone.
func TestMirrorSync(t *testing.T) {
	cloudtest.Credentials(t)
	srv := cloudtest.Start(t)
	srv.CreateBucket(t, "repo")
	srv.Put(t, "repo", "models/echo/config.pbtxt", []byte("name: \"echo\""))
	srv.Put(t, "repo", "models/echo/1/", nil)
	srv.Put(t, "repo", "models/add/1/model.bin", []byte("weights"))
	srv.Put(t, "repo", "models/add/labels.txt", []byte("a\nb"))
	srv.Put(t, "repo", "modelsx/other/config.pbtxt", []byte("not ours"))
	srv.Put(t, "repo", "elsewhere.txt", []byte("not ours"))
	m, _ := open(t, srv, "repo")

	rep := sync(t, m)
	if rep.Objects != 4 || rep.Fetched != 3 || rep.Removed != 0 {
		t.Errorf("first sync %+v, want 4 objects, 3 fetched", rep)
	}
	wantTree(t, m.Dir(), "add/1/model.bin=weights", "add/labels.txt=a\nb", "echo/1/", "echo/config.pbtxt=name: \"echo\"")
	cfg := filepath.Join(m.Dir(), "echo", "config.pbtxt")
	before, err := os.Stat(cfg)
	if err != nil {
		t.Fatal(err)
	}

	if rep := sync(t, m); rep.Fetched != 0 || rep.Removed != 0 {
		t.Errorf("sync of an unchanged bucket %+v, want nothing fetched or removed", rep)
	}
	if after, _ := os.Stat(cfg); !after.ModTime().Equal(before.ModTime()) {
		t.Error("an unchanged object was written again")
	}

	// Same size, other bytes: the ETag tells.
	srv.Put(t, "repo", "models/echo/config.pbtxt", []byte("name: \"ECHO\""))
	srv.Put(t, "repo", "models/echo/2/model.bin", []byte("v2"))
	srv.Delete(t, "repo", "models/add/1/model.bin")
	srv.Delete(t, "repo", "models/add/labels.txt")
	rep = sync(t, m)
	if rep.Fetched != 2 || rep.Removed == 0 {
		t.Errorf("sync after changes %+v, want 2 fetched and the add model removed", rep)
	}
	wantTree(t, m.Dir(), "echo/1/", "echo/2/model.bin=v2", "echo/config.pbtxt=name: \"ECHO\"")
	if _, err := os.Stat(filepath.Join(m.Dir(), "add")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the directory of a deleted model is still there: %v", err)
	}

	// A file removed or replaced locally is fetched again.
	if err := os.Remove(filepath.Join(m.Dir(), "echo", "2", "model.bin")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte("tampered, and longer"), 0o644); err != nil {
		t.Fatal(err)
	}
	if rep := sync(t, m); rep.Fetched != 2 {
		t.Errorf("sync after local damage %+v, want 2 fetched", rep)
	}
	wantTree(t, m.Dir(), "echo/1/", "echo/2/model.bin=v2", "echo/config.pbtxt=name: \"ECHO\"")

	// An object that turns into a directory, and back.
	srv.Delete(t, "repo", "models/echo/2/model.bin")
	srv.Put(t, "repo", "models/echo/2", []byte("now a file"))
	sync(t, m)
	wantTree(t, m.Dir(), "echo/1/", "echo/2=now a file", "echo/config.pbtxt=name: \"ECHO\"")
	srv.Delete(t, "repo", "models/echo/2")
	srv.Put(t, "repo", "models/echo/2/model.bin", []byte("v2 again"))
	sync(t, m)
	wantTree(t, m.Dir(), "echo/1/", "echo/2/model.bin=v2 again", "echo/config.pbtxt=name: \"ECHO\"")

	if err := m.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(m.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Remove left the copy: %v", err)
	}
}

// vanishing is the real store, except that the object named gone is
// deleted from the server just before it is fetched, as when a user
// deletes it between a listing and a download.
type vanishing struct {
	cloud.Store
	srv  *cloudtest.Server
	t    *testing.T
	gone string
}

func (v vanishing) Fetch(ctx context.Context, key string, w io.Writer) (cloud.Object, error) {
	if key == v.gone {
		v.srv.Delete(v.t, "repo", key)
	}
	return v.Store.Fetch(ctx, key, w)
}

// TestMirrorSyncAllOrNothing checks that a sync that cannot fetch every
// changed object leaves the copy as the last sync made it.
func TestMirrorSyncAllOrNothing(t *testing.T) {
	cloudtest.Credentials(t)
	srv := cloudtest.Start(t)
	srv.CreateBucket(t, "repo")
	srv.Put(t, "repo", "models/echo/config.pbtxt", []byte("v1"))
	srv.Put(t, "repo", "models/echo/1/model.bin", []byte("w1"))
	first, store := open(t, srv, "repo")
	sync(t, first)

	m, err := cloud.NewMirror(first.URL(), vanishing{Store: store, srv: srv, t: t, gone: "models/echo/1/model.bin"}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Sync(t.Context())
	if err == nil || !strings.Contains(err.Error(), "object 'models/echo/1/model.bin'") || !strings.Contains(err.Error(), "is gone") {
		t.Fatalf("sync with an object deleted under it: %v", err)
	}
	if inference.CodeOf(err) != inference.CodeNotFound {
		t.Errorf("code %v, want NotFound", inference.CodeOf(err))
	}
	wantTree(t, m.Dir()) // nothing placed: the config alone would be a broken model
	staging := filepath.Join(filepath.Dir(m.Dir()), "staging")
	if entries, _ := os.ReadDir(staging); len(entries) != 0 {
		t.Errorf("staged files left behind: %v", entries)
	}

	// The mirror that synced before keeps its copy when a sync fails.
	srv.Put(t, "repo", "models/echo/config.pbtxt", []byte("v2"))
	srv.Put(t, "repo", "models/echo/1/model.bin", []byte("w2"))
	failing, err := cloud.NewMirror(first.URL(), vanishing{Store: store, srv: srv, t: t, gone: "models/echo/1/model.bin"}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := failing.Sync(t.Context()); err == nil {
		t.Fatal("sync succeeded without an object")
	}
	wantTree(t, first.Dir(), "echo/1/model.bin=w1", "echo/config.pbtxt=v1")
}

// TestMirrorRefusesBadKeys checks that keys that are no relative path,
// or a path both a file and a directory, fail the sync and name the key.
func TestMirrorRefusesBadKeys(t *testing.T) {
	cloudtest.Credentials(t)
	for _, c := range []struct {
		keys []string
		want string
	}{
		{[]string{"models/echo//config.pbtxt"}, "empty path segment"},
		{[]string{"models/../escape"}, "'..' path segment"},
		{[]string{"models/a/./b"}, "'.' path segment"},
		{[]string{"models/a\\b"}, "backslash"},
		{[]string{"models/a/b", "models/a/b/c"}, "is both an object and a directory"},
	} {
		srv := cloudtest.Start(t)
		srv.CreateBucket(t, "repo")
		for _, k := range c.keys {
			srv.Put(t, "repo", k, []byte("x"))
		}
		m, _ := open(t, srv, "repo")
		_, err := m.Sync(t.Context())
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("keys %q: %v, want %q", c.keys, err, c.want)
			continue
		}
		if !strings.Contains(err.Error(), c.keys[len(c.keys)-1]) && !strings.Contains(err.Error(), c.keys[0]) {
			t.Errorf("keys %q: the error does not name the key: %v", c.keys, err)
		}
		if entries, _ := os.ReadDir(m.Dir()); len(entries) != 0 {
			t.Errorf("keys %q: a refused sync wrote %v", c.keys, entries)
		}
	}
}

// TestS3Errors checks the errors of the failures a user meets first: a
// bucket that does not exist, no credentials, an endpoint that does not
// answer.
func TestS3Errors(t *testing.T) {
	srv := cloudtest.Start(t)
	list := func(url string) error {
		t.Helper()
		u, err := cloud.ParseURL(url)
		if err != nil {
			t.Fatal(err)
		}
		store, err := cloud.NewS3(t.Context(), u, cloud.S3Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer store.Close()
		_, err = store.List(t.Context(), u.Prefix)
		t.Log(err)
		return err
	}
	t.Run("no such bucket", func(t *testing.T) {
		cloudtest.Credentials(t)
		err := list("s3://" + srv.HostPort + "/missing/models")
		if err == nil || !strings.Contains(err.Error(), "bucket 'missing' does not exist") || inference.CodeOf(err) != inference.CodeNotFound {
			t.Errorf("%v (code %v)", err, inference.CodeOf(err))
		}
		if !strings.Contains(err.Error(), "s3://http://"+srv.HostPort+"/missing/models") {
			t.Errorf("the error does not name the repository: %v", err)
		}
	})
	t.Run("no credentials", func(t *testing.T) {
		cloudtest.NoCredentials(t)
		srv.CreateBucket(t, "nocreds")
		err := list("s3://" + srv.HostPort + "/nocreds")
		if err == nil || !strings.Contains(err.Error(), "no usable AWS credentials") || !strings.Contains(err.Error(), "AWS_ACCESS_KEY_ID") {
			t.Errorf("%v", err)
		}
	})
	t.Run("unreachable endpoint", func(t *testing.T) {
		cloudtest.Credentials(t)
		addr := cloudtest.ClosedPort(t)
		err := list("s3://" + addr + "/models")
		if err == nil || !strings.Contains(err.Error(), "cannot reach http://"+addr) || inference.CodeOf(err) != inference.CodeUnavailable {
			t.Errorf("%v (code %v)", err, inference.CodeOf(err))
		}
	})
	t.Run("profile that does not exist", func(t *testing.T) {
		cloudtest.NoCredentials(t)
		t.Setenv("AWS_PROFILE", "nereid-no-such-profile")
		u, _ := cloud.ParseURL("s3://bucket")
		_, err := cloud.NewS3(t.Context(), u, cloud.S3Options{})
		if err == nil || !strings.Contains(err.Error(), "cannot read the AWS configuration") || !strings.Contains(err.Error(), "nereid-no-such-profile") {
			t.Errorf("%v", err)
		}
	})
}

// TestS3CredentialsFile checks that the credentials of the shared file
// (~/.aws/credentials, AWS_SHARED_CREDENTIALS_FILE) are used when the
// environment has none.
func TestS3CredentialsFile(t *testing.T) {
	cloudtest.NoCredentials(t)
	file := filepath.Join(t.TempDir(), "credentials")
	if err := os.WriteFile(file, []byte("[default]\naws_access_key_id = fromfile\naws_secret_access_key = secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", file)
	srv := cloudtest.Start(t)
	srv.CreateBucket(t, "repo")
	srv.Put(t, "repo", "models/echo/config.pbtxt", []byte("x"))
	m, _ := open(t, srv, "repo")
	if rep := sync(t, m); rep.Fetched != 1 {
		t.Errorf("%+v", rep)
	}
}
