package repository_test

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	_ "github.com/nereid-project/nereid/backends/identity" // the bucket's model
	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/repository"
	"github.com/nereid-project/nereid/repository/cloud/cloudtest"
	"github.com/nereid-project/nereid/server"
)

// echoConfig is an identity model whose "tag" parameter tells which
// configuration is loaded.
func echoConfig(name, tag string) []byte {
	return []byte(`name: "` + name + `"
backend: "identity"
max_batch_size: 4
input [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ 2 ] } ]
output [ { name: "OUTPUT0", data_type: TYPE_FP32, dims: [ 2 ] } ]
parameters { key: "tag" value { string_value: "` + tag + `" } }
`)
}

// s3Core is a Manager over s3://<fake server>/models/repo and a server
// core on it, closed when the test ends.
type s3Core struct {
	models *repository.Manager
	core   *server.Server
	cache  string
}

func newS3Core(t *testing.T, srv *cloudtest.Server, mode repository.ControlMode, startup ...string) (*s3Core, error) {
	t.Helper()
	log := zerolog.Nop()
	loader := server.NewLoader(server.LoaderOptions{Logger: log})
	cache := t.TempDir()
	models, err := repository.New(repository.Options{
		Paths:         []string{"s3://" + srv.HostPort + "/models/repo"},
		CloudCacheDir: cache,
		Mode:          mode, StartupModels: startup,
		Loader: loader, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := models.Close(ctx); err != nil {
			t.Error(err)
		}
		if entries, _ := os.ReadDir(cache); len(entries) != 0 {
			t.Errorf("Close left the cloud copies in %s: %v", cache, entries)
		}
	})
	core := server.New(models, server.Options{Logger: log})
	loader.Inferer().Bind(core)
	return &s3Core{models: models, core: core, cache: cache}, models.Start(t.Context())
}

// infer sends [[1.5, -2]] through the core and returns the version that
// answered; the output must be the input.
func (c *s3Core) infer(t *testing.T, model string) (string, error) {
	t.Helper()
	data := make([]byte, 8)
	binary.LittleEndian.PutUint32(data, math.Float32bits(1.5))
	binary.LittleEndian.PutUint32(data[4:], math.Float32bits(-2))
	resp, err := c.core.Infer(t.Context(), &inference.Request{ModelName: model,
		Inputs: []inference.Tensor{{Name: "INPUT0", DataType: inference.FP32, Shape: []int64{1, 2}, Data: data}}})
	if err != nil {
		return "", err
	}
	defer resp.Done()
	if len(resp.Outputs) != 1 || !slices.Equal(resp.Outputs[0].Data, data) {
		t.Fatalf("%s answered %+v, want the input back", model, resp.Outputs)
	}
	return resp.ModelVersion, nil
}

func (c *s3Core) tag(t *testing.T, model string) string {
	t.Helper()
	cfg, err := c.core.ModelConfig(t.Context(), model, "")
	if err != nil {
		t.Fatal(err)
	}
	return cfg.GetParameters()["tag"].GetStringValue()
}

// TestS3RepositoryPoll serves a repository from a real S3-protocol server
// in poll mode: the models load from the bucket, answer through the core,
// and each poll sees what changed there: a new version, an edited
// configuration, a deleted model.
func TestS3RepositoryPoll(t *testing.T) {
	cloudtest.Credentials(t)
	srv := cloudtest.Start(t)
	srv.CreateBucket(t, "models")
	srv.Put(t, "models", "repo/echo/config.pbtxt", echoConfig("echo", "one"))
	srv.Put(t, "models", "repo/echo/1/", nil)
	srv.Put(t, "models", "repo/gone/config.pbtxt", echoConfig("gone", "one"))
	srv.Put(t, "models", "repo/gone/1/", nil)
	srv.Put(t, "models", "other/elsewhere/config.pbtxt", echoConfig("elsewhere", "one"))

	c, err := newS3Core(t, srv, repository.ModePoll)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := c.infer(t, "echo"); err != nil || v != "1" {
		t.Fatalf("echo: version %q, %v", v, err)
	}
	if _, err := c.infer(t, "gone"); err != nil {
		t.Fatal(err)
	}
	if got := c.tag(t, "echo"); got != "one" {
		t.Errorf("tag %q", got)
	}
	var names []string
	for _, e := range c.models.Index(false) {
		names = append(names, e.Name)
	}
	if !slices.Equal(names, []string{"echo", "gone"}) {
		t.Errorf("index %v: only the models under the prefix belong to the repository", names)
	}

	// A poll of an unchanged bucket reloads nothing.
	if err := c.models.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}

	srv.Put(t, "models", "repo/echo/config.pbtxt", echoConfig("echo", "two"))
	srv.Put(t, "models", "repo/echo/2/", nil)
	srv.Delete(t, "models", "repo/gone/config.pbtxt")
	srv.Delete(t, "models", "repo/gone/1/")
	if err := c.models.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	if v, err := c.infer(t, "echo"); err != nil || v != "2" {
		t.Errorf("after the poll echo answered as version %q, %v; want version 2", v, err)
	}
	if got := c.tag(t, "echo"); got != "two" {
		t.Errorf("after the poll the configuration has tag %q, want the edited one", got)
	}
	if _, err := c.infer(t, "gone"); inference.CodeOf(err) != inference.CodeNotFound {
		t.Errorf("a model deleted from the bucket still answers: %v", err)
	}

	// A store that fails keeps the models serving and unloads nothing.
	srv.Put(t, "models", "repo/echo/bad//key", []byte("x"))
	err = c.models.Poll(t.Context())
	if err == nil || !strings.Contains(err.Error(), "empty path segment") {
		t.Errorf("poll of a bucket with a bad key: %v", err)
	}
	if v, err := c.infer(t, "echo"); err != nil || v != "2" {
		t.Errorf("after a failed poll echo answered as version %q, %v", v, err)
	}
}

// TestS3RepositoryExplicit loads from the bucket on request: each load
// fetches what changed since the last one.
func TestS3RepositoryExplicit(t *testing.T) {
	cloudtest.Credentials(t)
	srv := cloudtest.Start(t)
	srv.CreateBucket(t, "models")
	srv.Put(t, "models", "repo/echo/config.pbtxt", echoConfig("echo", "one"))
	srv.Put(t, "models", "repo/echo/1/", nil)
	c, err := newS3Core(t, srv, repository.ModeExplicit, "echo")
	if err != nil {
		t.Fatal(err)
	}
	if v, err := c.infer(t, "echo"); err != nil || v != "1" {
		t.Fatalf("echo: version %q, %v", v, err)
	}
	srv.Put(t, "models", "repo/late/config.pbtxt", echoConfig("late", "one"))
	srv.Put(t, "models", "repo/late/3/", nil)
	srv.Put(t, "models", "repo/echo/config.pbtxt", echoConfig("echo", "two"))
	for _, name := range []string{"late", "echo"} {
		if err := c.models.Load(t.Context(), name, repository.LoadOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if v, err := c.infer(t, "late"); err != nil || v != "3" {
		t.Errorf("late: version %q, %v", v, err)
	}
	if got := c.tag(t, "echo"); got != "two" {
		t.Errorf("echo reloaded with tag %q, want the edited configuration", got)
	}
}

// TestS3RepositoryErrors checks what a user sees for a bucket that does
// not exist, missing credentials, and the schemes Nereid does not serve.
func TestS3RepositoryErrors(t *testing.T) {
	srv := cloudtest.Start(t)
	t.Run("no such bucket", func(t *testing.T) {
		cloudtest.Credentials(t)
		c, err := newS3Core(t, srv, repository.ModeExplicit)
		if err == nil || !strings.Contains(err.Error(), "bucket 'models' does not exist") {
			t.Fatalf("start over a missing bucket: %v", err)
		}
		if !strings.Contains(err.Error(), "s3://http://"+srv.HostPort+"/models/repo") {
			t.Errorf("the error does not name the repository: %v", err)
		}
		if err := c.models.Load(t.Context(), "echo", repository.LoadOptions{}); err == nil || !strings.Contains(err.Error(), "does not exist") {
			t.Errorf("load: %v", err)
		}
	})
	t.Run("no credentials", func(t *testing.T) {
		cloudtest.NoCredentials(t)
		_, err := newS3Core(t, srv, repository.ModeExplicit)
		if err == nil || !strings.Contains(err.Error(), "no usable AWS credentials") {
			t.Fatalf("start without credentials: %v", err)
		}
	})
	log := zerolog.Nop()
	for _, c := range []struct{ path, want string }{
		{"gs://bucket/models", "gs:// repositories are not supported yet"},
		{"as://account/container/models", "as:// repositories are not supported yet"},
		{"hdfs://namenode/models", "scheme 'hdfs' is not supported"},
		{"s3://bucket//models", "empty segment"},
	} {
		_, err := repository.New(repository.Options{Paths: []string{t.TempDir(), c.path}, Loader: server.NewLoader(server.LoaderOptions{Logger: log}), Logger: log})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.path, err, c.want)
		}
	}
	_, err := repository.New(repository.Options{Paths: []string{"s3://bucket/models"}, CloudCacheDir: "/nonexistent/nereid",
		Loader: server.NewLoader(server.LoaderOptions{Logger: log}), Logger: log})
	if err == nil || !strings.Contains(err.Error(), "cache directory '/nonexistent/nereid' cannot be used") {
		t.Errorf("missing cache directory: %v", err)
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the cache directory error does not wrap the cause: %v", err)
	}
}
