package modelmesh

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	_ "github.com/nereid-project/nereid/backends/identity" // the test models' backend
	"github.com/nereid-project/nereid/proto/modelmeshpb"
	"github.com/nereid-project/nereid/repository"
	"github.com/nereid-project/nereid/server"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// identityConfig is an identity model's configuration; memory, when
// positive, is its declared nereid_memory_bytes.
func identityConfig(name string, memory int64, extra string) string {
	cfg := fmt.Sprintf(`name: "%s"
backend: "identity"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
`, name)
	if memory > 0 {
		cfg += fmt.Sprintf("parameters { key: \"nereid_memory_bytes\" value { string_value: \"%d\" } }\n", memory)
	}
	return cfg + extra
}

// writeModel writes a model directory with the versions given, each with a
// file of fileBytes bytes.
func writeModel(t *testing.T, dir, config string, fileBytes int, versions ...int) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if config != "" {
		if err := os.WriteFile(filepath.Join(dir, configFile), []byte(config), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, v := range versions {
		vdir := filepath.Join(dir, fmt.Sprint(v))
		if err := os.MkdirAll(vdir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(vdir, "weights"), make([]byte, fileBytes), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// harness is a real server core (explicit mode, an empty repository, the
// model cache's budget) behind the service, over an in-memory connection.
type harness struct {
	core   *server.Server
	svc    *Server
	client modelmeshpb.ModelRuntimeClient
	work   string
}

func newHarness(t *testing.T, budget int64, wrap func(*server.Server) Core) *harness {
	t.Helper()
	log := zerolog.Nop()
	loader := server.NewLoader(server.LoaderOptions{Logger: log})
	models, err := repository.New(repository.Options{
		Paths: []string{t.TempDir()}, Mode: repository.ModeExplicit, Loader: loader, Logger: log,
		MemoryBudget: budget, LoadThreads: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := models.Start(ctx); err != nil {
		t.Fatal(err)
	}
	core := server.New(models, server.Options{Logger: log})
	loader.Inferer().Bind(core)
	var c Core = core
	if wrap != nil {
		c = wrap(core)
	}
	work := t.TempDir()
	svc, err := New(c, Options{
		Capacity: budget, DefaultModelSize: 777, LoadConcurrency: 2, LoadTimeout: 20 * time.Second,
		UnloadPoll: 5 * time.Millisecond, Version: "1.2.3", WorkDir: work, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln := bufconn.Listen(1 << 20)
	served := make(chan error, 1)
	go func() { served <- svc.Serve(ln) }()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := svc.Shutdown(sctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if err := models.Close(sctx); err != nil {
			t.Errorf("closing the models: %v", err)
		}
		if _, err := os.Stat(svc.svc.dir); !os.IsNotExist(err) {
			t.Errorf("the working directory is still there after Shutdown: %v", err)
		}
	})
	return &harness{core: core, svc: svc, client: modelmeshpb.NewModelRuntimeClient(conn), work: svc.svc.dir}
}

func wantCode(t *testing.T, err error, code codes.Code, text string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code || !strings.Contains(st.Message(), text) {
		t.Fatalf("error %v, want %s containing %q", err, code, text)
	}
}

func (h *harness) load(t *testing.T, id, path string) (*modelmeshpb.LoadModelResponse, error) {
	t.Helper()
	return h.client.LoadModel(context.Background(), &modelmeshpb.LoadModelRequest{
		ModelId: id, ModelPath: path, ModelType: "triton", ModelKey: `{"model_type":{"name":"triton"}}`,
	})
}

func (h *harness) ready(t *testing.T, id string) bool {
	t.Helper()
	ok, err := h.core.ModelReady(context.Background(), id, "")
	return err == nil && ok
}

// repositories lists the per-load repositories in the working directory.
func (h *harness) repositories(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(h.work)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func TestLoadSizeInferUnload(t *testing.T) {
	h := newHarness(t, 1<<20, nil)
	ctx := context.Background()
	dir := writeModel(t, filepath.Join(t.TempDir(), "simple"), identityConfig("simple", 4096, ""), 10, 1)

	resp, err := h.load(t, "simple__isvc-1", dir)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetSizeInBytes() != 4096 {
		t.Errorf("loadModel size %d, want the declared 4096", resp.GetSizeInBytes())
	}
	if !h.ready(t, "simple__isvc-1") {
		t.Fatal("the model is not served under its model id")
	}
	cfg, err := h.core.ModelConfig(ctx, "simple__isvc-1", "")
	if err != nil || cfg.GetName() != "simple__isvc-1" {
		t.Errorf("served configuration name %q (%v), want the model id", cfg.GetName(), err)
	}
	if h.ready(t, "simple") {
		t.Error("the model is also served under its directory's name")
	}
	size, err := h.client.ModelSize(ctx, &modelmeshpb.ModelSizeRequest{ModelId: "simple__isvc-1"})
	if err != nil || size.GetSizeInBytes() != 4096 {
		t.Errorf("modelSize %v (%v), want 4096", size, err)
	}

	// A repeated load is answered again; from another path it is refused.
	if again, err := h.load(t, "simple__isvc-1", dir); err != nil || again.GetSizeInBytes() != 4096 {
		t.Errorf("repeated load: %v (%v)", again, err)
	}
	other := writeModel(t, filepath.Join(t.TempDir(), "simple"), identityConfig("simple", 0, ""), 10, 1)
	_, err = h.load(t, "simple__isvc-1", other)
	wantCode(t, err, codes.AlreadyExists, "already loaded from")

	if _, err := h.client.UnloadModel(ctx, &modelmeshpb.UnloadModelRequest{ModelId: "simple__isvc-1"}); err != nil {
		t.Fatal(err)
	}
	if h.ready(t, "simple__isvc-1") {
		t.Error("the model still serves after unloadModel returned")
	}
	entries, _ := h.core.RepositoryIndex(ctx, false)
	for _, e := range entries {
		if e.Name == "simple__isvc-1" && e.State != repository.StateUnavailable && e.State != "" {
			t.Errorf("unloadModel returned before the unload completed: %v", entries)
		}
	}
	_, err = h.client.ModelSize(ctx, &modelmeshpb.ModelSizeRequest{ModelId: "simple__isvc-1"})
	wantCode(t, err, codes.NotFound, "not loaded")
	if got := h.repositories(t); len(got) != 0 {
		t.Errorf("repositories left after the unload: %v", got)
	}
	// Unknown ids: unloadModel succeeds at once, as ModelMesh asks.
	if _, err := h.client.UnloadModel(ctx, &modelmeshpb.UnloadModelRequest{ModelId: "simple__isvc-1"}); err != nil {
		t.Errorf("second unload: %v", err)
	}
	if _, err := h.client.UnloadModel(ctx, &modelmeshpb.UnloadModelRequest{ModelId: "never-loaded"}); err != nil {
		t.Errorf("unload of an unknown id: %v", err)
	}
	// And the same files load again under the same id.
	if _, err := h.load(t, "simple__isvc-1", dir); err != nil {
		t.Fatalf("load after unload: %v", err)
	}
}

func TestLayouts(t *testing.T) {
	h := newHarness(t, 1<<20, nil)
	root := t.TempDir()

	// A repository with one model.
	one := filepath.Join(root, "one")
	writeModel(t, filepath.Join(one, "m"), identityConfig("m", 100, ""), 10, 1)
	if _, err := h.load(t, "from-repo", one); err != nil {
		t.Fatal(err)
	}
	if !h.ready(t, "from-repo") {
		t.Error("the repository's model is not served under the id")
	}

	// A repository with an ensemble and its composing model: the
	// ensemble is served under the id, its step under its own name, and
	// the size counts both.
	ens := filepath.Join(root, "ens")
	writeModel(t, filepath.Join(ens, "step"), identityConfig("step", 300, ""), 10, 1)
	writeModel(t, filepath.Join(ens, "pipeline"), `name: "pipeline"
platform: "ensemble"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ -1 ] } ]
ensemble_scheduling { step [ { model_name: "step" model_version: -1
  input_map { key: "INPUT0" value: "IN" } output_map { key: "OUTPUT0" value: "OUT" } } ] }
`, 0, 1)
	resp, err := h.load(t, "pipeline-id", ens)
	if err != nil {
		t.Fatal(err)
	}
	if !h.ready(t, "pipeline-id") || !h.ready(t, "step") {
		t.Error("the ensemble or its step is not served")
	}
	if resp.GetSizeInBytes() < 300 {
		t.Errorf("ensemble size %d, want at least its step's 300", resp.GetSizeInBytes())
	}
	if _, err := h.client.UnloadModel(context.Background(), &modelmeshpb.UnloadModelRequest{ModelId: "pipeline-id"}); err != nil {
		t.Fatal(err)
	}
	if h.ready(t, "step") {
		t.Error("the ensemble's step still serves after the unload")
	}

	// Layouts that serve nothing, or too much.
	two := filepath.Join(root, "two")
	writeModel(t, filepath.Join(two, "a"), identityConfig("a", 0, ""), 1, 1)
	writeModel(t, filepath.Join(two, "b"), identityConfig("b", 0, ""), 1, 1)
	empty := filepath.Join(root, "empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(root, "model.onnx")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ id, path, want string }{
		{"x", two, "holds 2 models (a, b) and 0 ensembles"},
		{"x", empty, "holds no model"},
		{"x", file, "is not a directory"},
		{"x", filepath.Join(root, "missing"), "does not exist"},
		{"x", "relative/path", "must be an absolute path"},
		{"x", "/proc/self", "must not be under /proc"},
		{"x", "", "modelPath must not be empty"},
		{"", one, "modelId must not be empty"},
		{"a/b", one, "must not contain"},
		{"..", one, "must not contain"},
		{"  ", one, "only white space"},
	} {
		_, err := h.load(t, tc.id, tc.path)
		wantCode(t, err, codes.InvalidArgument, tc.want)
	}
	// A model whose configuration does not load: nothing stays behind.
	bad := writeModel(t, filepath.Join(root, "bad"), `name: "bad" backend: "no_such_backend"`, 1, 1)
	_, err = h.load(t, "bad-id", bad)
	wantCode(t, err, codes.InvalidArgument, bad+"/config.pbtxt: unable to find backend 'no_such_backend'")
	if _, err := h.client.UnloadModel(context.Background(), &modelmeshpb.UnloadModelRequest{ModelId: "bad-id"}); err != nil {
		t.Errorf("unload after a failed load: %v", err)
	}
	if got := h.repositories(t); len(got) != 1 { // from-repo's
		t.Errorf("repositories %v, want only the loaded model's", got)
	}
}

func TestOversizeModel(t *testing.T) {
	h := newHarness(t, 10_000, nil)
	dir := writeModel(t, filepath.Join(t.TempDir(), "big"), identityConfig("big", 20_000, ""), 1, 1)
	_, err := h.load(t, "big-id", dir)
	wantCode(t, err, codes.FailedPrecondition, "--model-cache-memory")
	_, err = h.client.ModelSize(context.Background(), &modelmeshpb.ModelSizeRequest{ModelId: "big-id"})
	wantCode(t, err, codes.NotFound, "not loaded")
	if got := h.repositories(t); len(got) != 0 {
		t.Errorf("repositories left after a refused load: %v", got)
	}
}

func TestPredictModelSize(t *testing.T) {
	h := newHarness(t, 1<<20, nil)
	ctx := context.Background()
	root := t.TempDir()
	declared := writeModel(t, filepath.Join(root, "declared"),
		identityConfig("declared", 1000, "version_policy { all { } }\n"), 10, 1, 2, 3)
	files := writeModel(t, filepath.Join(root, "files"), identityConfig("files", 0, ""), 2500, 1, 2)
	for _, tc := range []struct {
		path, key string
		want      uint64
	}{
		{declared, "", 3000}, // declared, per version of the policy
		{files, "", 2500},    // the latest version's files
		{filepath.Join(root, "not-pulled"), `{"disk_size_bytes": 4321}`, 4321}, // from the puller's key
		{filepath.Join(root, "not-pulled"), "not json", 777},                   // the default
		{"s3://bucket/model", "", 777},
	} {
		resp, err := h.client.PredictModelSize(ctx, &modelmeshpb.PredictModelSizeRequest{ModelId: "p", ModelPath: tc.path, ModelKey: tc.key})
		if err != nil || resp.GetSizeInBytes() != tc.want {
			t.Errorf("predictModelSize(%s, %q) = %v (%v), want %d", tc.path, tc.key, resp, err, tc.want)
		}
	}
	_, err := h.client.PredictModelSize(ctx, &modelmeshpb.PredictModelSizeRequest{ModelPath: files})
	wantCode(t, err, codes.InvalidArgument, "modelId must not be empty")
	_, err = h.client.ModelSize(ctx, &modelmeshpb.ModelSizeRequest{})
	wantCode(t, err, codes.InvalidArgument, "modelId must not be empty")
	_, err = h.client.UnloadModel(ctx, &modelmeshpb.UnloadModelRequest{})
	wantCode(t, err, codes.InvalidArgument, "modelId must not be empty")
}

// notReady is a core that is not ready yet.
type notReady struct{ *server.Server }

func (notReady) Ready() bool { return false }

func TestRuntimeStatus(t *testing.T) {
	h := newHarness(t, 1<<20, nil)
	ctx := context.Background()
	dir := writeModel(t, filepath.Join(t.TempDir(), "m"), identityConfig("m", 100, ""), 1, 1)
	if _, err := h.load(t, "left-over", dir); err != nil {
		t.Fatal(err)
	}
	st, err := h.client.RuntimeStatus(ctx, &modelmeshpb.RuntimeStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetStatus() != modelmeshpb.RuntimeStatusResponse_READY || st.GetCapacityInBytes() != 1<<20 ||
		st.GetMaxLoadingConcurrency() != 2 || st.GetModelLoadingTimeoutMs() != 20_000 ||
		st.GetDefaultModelSizeInBytes() != 777 || st.GetRuntimeVersion() != "1.2.3" ||
		st.GetNumericRuntimeVersion() != 1_002_003 || st.GetLimitModelConcurrency() || st.GetAllowAnyMethod() {
		t.Errorf("runtimeStatus %v", st)
	}
	for _, m := range []string{"ModelInfer", "ModelMetadata", "ModelReady", "ModelConfig"} {
		mi := st.GetMethodInfos()["inference.GRPCInferenceService/"+m]
		if len(mi.GetIdInjectionPath()) != 1 || mi.GetIdInjectionPath()[0] != 1 {
			t.Errorf("methodInfos[%s] = %v, want idInjectionPath [1]", m, mi)
		}
	}
	if len(st.GetMethodInfos()) != 4 {
		t.Errorf("methodInfos %v", st.GetMethodInfos())
	}
	// The models ModelMesh had loaded are gone before READY.
	if h.ready(t, "left-over") {
		t.Error("runtimeStatus did not unload the models loaded before it")
	}
	if got := h.repositories(t); len(got) != 0 {
		t.Errorf("repositories left after runtimeStatus: %v", got)
	}

	starting := newHarness(t, 1<<20, func(s *server.Server) Core { return notReady{s} })
	st, err = starting.client.RuntimeStatus(ctx, &modelmeshpb.RuntimeStatusRequest{})
	if err != nil || st.GetStatus() != modelmeshpb.RuntimeStatusResponse_STARTING || st.GetCapacityInBytes() != 0 {
		t.Errorf("runtimeStatus of a server not ready: %v (%v)", st, err)
	}
}

// blockingLoads is a core whose loads wait for their context to end.
type blockingLoads struct {
	*server.Server
	started chan struct{}
}

func (b blockingLoads) LoadModel(ctx context.Context, _ string, _ repository.LoadOptions) error {
	b.started <- struct{}{}
	<-ctx.Done()
	return ctx.Err()
}

func TestCancelledLoadThenUnload(t *testing.T) {
	started := make(chan struct{}, 1)
	h := newHarness(t, 1<<20, func(s *server.Server) Core { return blockingLoads{s, started} })
	dir := writeModel(t, filepath.Join(t.TempDir(), "m"), identityConfig("m", 100, ""), 1, 1)

	ctx, cancel := context.WithCancel(context.Background())
	loadErr := make(chan error, 1)
	go func() {
		_, err := h.client.LoadModel(ctx, &modelmeshpb.LoadModelRequest{ModelId: "slow", ModelPath: dir})
		loadErr <- err
	}()
	<-started
	// ModelMesh cancels the load and sends an unload at once: the unload
	// waits for the load to give up, then finds nothing to unload.
	cancel()
	if _, err := h.client.UnloadModel(context.Background(), &modelmeshpb.UnloadModelRequest{ModelId: "slow"}); err != nil {
		t.Fatalf("unload after a cancelled load: %v", err)
	}
	wantCode(t, <-loadErr, codes.Canceled, "")
	// The unload ran after the load had cleaned up behind it.
	if got := h.repositories(t); len(got) != 0 {
		t.Errorf("repositories left after a cancelled load: %v", got)
	}
	if h.svc.svc.table.known("slow") {
		t.Error("the cancelled load's entry is still in the table")
	}
}

func TestLoadTimeout(t *testing.T) {
	started := make(chan struct{}, 1)
	h := newHarness(t, 1<<20, func(s *server.Server) Core { return blockingLoads{s, started} })
	h.svc.svc.opts.LoadTimeout = 50 * time.Millisecond // before any call
	dir := writeModel(t, filepath.Join(t.TempDir(), "m"), identityConfig("m", 100, ""), 1, 1)
	_, err := h.load(t, "slow", dir)
	wantCode(t, err, codes.DeadlineExceeded, "did not load within 50ms")
	<-started
	if got := h.repositories(t); len(got) != 0 {
		t.Errorf("repositories left after a timed-out load: %v", got)
	}
}

func TestNumericVersion(t *testing.T) {
	for v, want := range map[string]uint64{"0.1.0": 1000, "v2.41.7": 2_041_007, "1": 1_000_000, "1.2.3-rc1": 1_002_003, "": 0, "x.y": 0} {
		if got := numericVersion(v); got != want {
			t.Errorf("numericVersion(%q) = %d, want %d", v, got, want)
		}
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	if _, err := New(nil, Options{WorkDir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "--model-cache-memory") {
		t.Errorf("no capacity: %v", err)
	}
	if _, err := New(nil, Options{Capacity: 1}); err == nil {
		t.Error("no working directory: no error")
	}
}
