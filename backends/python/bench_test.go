package python

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/nereid-project/nereid/backends/backendtest"
	"github.com/nereid-project/nereid/inference"
)

// BenchmarkIdentity is one request's round trip through a real stub
// running model_repo_examples/identity_python, without a front end.
func BenchmarkIdentity(b *testing.B) {
	be := New(Options{Python: benchPython(b), CacheDir: b.TempDir()})
	cfg := backendtest.Config(b, "../../model_repo_examples/identity_python/config.pbtxt")
	ti, err := loadB(b, be, "../../model_repo_examples/identity_python", cfg)
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{4, 16384} {
		b.Run(byteName(4*n), func(b *testing.B) {
			data := make([]byte, 4*n)
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				req := &inference.Request{ModelName: "identity_python", Inputs: []inference.Tensor{
					{Name: "INPUT0", DataType: inference.FP32, Shape: []int64{1, int64(n)}, Data: data},
				}}
				resps, err := backendtest.Collect(context.Background(), ti.inst, []*inference.Request{req})
				if err != nil {
					b.Fatal(err)
				}
				resps[0][0].Done()
			}
		})
	}
}

// BenchmarkPing is one health-check round trip: the stub's reader thread
// answers it, the model is not involved.
func BenchmarkPing(b *testing.B) {
	be := New(Options{Python: benchPython(b), CacheDir: b.TempDir()})
	cfg := backendtest.Config(b, "../../model_repo_examples/identity_python/config.pbtxt")
	ti, err := loadB(b, be, "../../model_repo_examples/identity_python", cfg)
	if err != nil {
		b.Fatal(err)
	}
	s := ti.inst.current()
	for b.Loop() {
		if err := s.ping(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}

// cpuTicks reads a process's user and system time, in clock ticks.
func cpuTicks(pid int) (int64, int64) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u, s
}

// BenchmarkIdentityCPU reports the CPU time of the server process and of
// the stub per request, next to the wall time.
func BenchmarkIdentityCPU(b *testing.B) {
	be := New(Options{Python: benchPython(b), CacheDir: b.TempDir()})
	cfg := backendtest.Config(b, "../../model_repo_examples/identity_python/config.pbtxt")
	ti, err := loadB(b, be, "../../model_repo_examples/identity_python", cfg)
	if err != nil {
		b.Fatal(err)
	}
	pid := ti.inst.current().pid()
	data := make([]byte, 16)
	su0, ss0 := cpuTicks(pid)
	pu0, ps0 := cpuTicks(os.Getpid())
	for b.Loop() {
		req := &inference.Request{ModelName: "identity_python", Inputs: []inference.Tensor{
			{Name: "INPUT0", DataType: inference.FP32, Shape: []int64{1, 4}, Data: data},
		}}
		resps, err := backendtest.Collect(context.Background(), ti.inst, []*inference.Request{req})
		if err != nil {
			b.Fatal(err)
		}
		resps[0][0].Done()
	}
	su1, ss1 := cpuTicks(pid)
	pu1, ps1 := cpuTicks(os.Getpid())
	perOp := func(t int64) float64 { return float64(t) * 1e4 / float64(b.N) } // µs at 100 ticks/s
	b.ReportMetric(perOp(su1-su0), "stub-user-µs/op")
	b.ReportMetric(perOp(ss1-ss0), "stub-sys-µs/op")
	b.ReportMetric(perOp(pu1-pu0), "parent-user-µs/op")
	b.ReportMetric(perOp(ps1-ps0), "parent-sys-µs/op")
}
