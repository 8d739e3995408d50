package ensemble

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/encoding/prototext"

	"github.com/nereid-project/nereid/backends/backendtest"
	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func parse(t *testing.T, text string) *inferencepb.ModelConfig {
	t.Helper()
	cfg := &inferencepb.ModelConfig{}
	if err := prototext.Unmarshal([]byte(text), cfg); err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	return cfg
}

// models is a fake server: configurations by name, and a function per model
// that answers its requests.
type models struct {
	cfgs map[string]*inferencepb.ModelConfig
	run  map[string]func(ctx context.Context, req *inference.Request, out inference.ResponseFunc) error
}

func (m *models) ModelConfig(_ context.Context, name, _ string) (*inferencepb.ModelConfig, error) {
	if c, ok := m.cfgs[name]; ok {
		return c, nil
	}
	return nil, inference.NotFound("Request for unknown model: '%s' is not found", name)
}

func (m *models) InferStream(ctx context.Context, req *inference.Request, out inference.ResponseFunc) error {
	return m.run[req.ModelName](ctx, req, out)
}

// unit is a model of one INT32 [-1] input IN and output OUT.
func unit(t *testing.T, name string, decoupled bool) *inferencepb.ModelConfig {
	text := `name: "` + name + `" backend: "fake" max_batch_size: 0
input [{ name: "IN" data_type: TYPE_INT32 dims: [ -1 ] }]
output [{ name: "OUT" data_type: TYPE_INT32 dims: [ -1 ] }]`
	if decoupled {
		text += ` model_transaction_policy { decoupled: true }`
	}
	return parse(t, text)
}

// two is a model of inputs A and B and output OUT, INT32 [-1].
func two(t *testing.T, name string) *inferencepb.ModelConfig {
	return parse(t, `name: "`+name+`" backend: "fake" max_batch_size: 0
input [{ name: "A" data_type: TYPE_INT32 dims: [ -1 ] }, { name: "B" data_type: TYPE_INT32 dims: [ -1 ] }]
output [{ name: "OUT" data_type: TYPE_INT32 dims: [ -1 ] }]`)
}

func i32(v ...int32) inference.Tensor {
	b := make([]byte, 4*len(v))
	for k, x := range v {
		b[4*k], b[4*k+1], b[4*k+2], b[4*k+3] = byte(x), byte(x>>8), byte(x>>16), byte(x>>24)
	}
	return inference.Tensor{DataType: inference.Int32, Shape: []int64{int64(len(v))}, Data: b}
}

func vals(t inference.Tensor) []int32 {
	out := make([]int32, len(t.Data)/4)
	for k := range out {
		d := t.Data[4*k:]
		out[k] = int32(uint32(d[0]) | uint32(d[1])<<8 | uint32(d[2])<<16 | uint32(d[3])<<24)
	}
	return out
}

// add returns a model function that adds k to every element of each input
// and answers with their element-wise sum as OUT.
func add(k int32) func(context.Context, *inference.Request, inference.ResponseFunc) error {
	return func(_ context.Context, req *inference.Request, out inference.ResponseFunc) error {
		sum := make([]int32, len(req.Inputs[0].Data)/4)
		for _, in := range req.Inputs {
			for j, v := range vals(in) {
				sum[j] += v + k
			}
		}
		o := i32(sum...)
		o.Name = "OUT"
		return out(&inference.Response{Outputs: []inference.Tensor{o}}, true)
	}
}

const pipeline = `name: "ens" platform: "ensemble" max_batch_size: 0
input [{ name: "X" data_type: TYPE_INT32 dims: [ -1 ] }]
output [{ name: "Z" data_type: TYPE_INT32 dims: [ -1 ] }]
ensemble_scheduling { step [
  { model_name: "first" model_version: -1 input_map { key: "IN" value: "X" } output_map { key: "OUT" value: "Y" } },
  { model_name: "second" model_version: -1 input_map { key: "IN" value: "Y" } output_map { key: "OUT" value: "Z" } }
] }`

// diamond: X feeds left and right concurrently; join adds their outputs.
const diamond = `name: "ens" platform: "ensemble" max_batch_size: 0
input [{ name: "X" data_type: TYPE_INT32 dims: [ -1 ] }]
output [{ name: "Z" data_type: TYPE_INT32 dims: [ -1 ] }]
ensemble_scheduling { step [
  { model_name: "join" model_version: -1 input_map [{ key: "A" value: "L" }, { key: "B" value: "R" }] output_map { key: "OUT" value: "Z" } },
  { model_name: "left" model_version: -1 input_map { key: "IN" value: "X" } output_map { key: "OUT" value: "L" } },
  { model_name: "right" model_version: -1 input_map { key: "IN" value: "X" } output_map { key: "OUT" value: "R" } }
] }`

func build(t *testing.T, text string, m *models) *Executor {
	t.Helper()
	p, err := Build(context.Background(), parse(t, text), 1, m)
	if err != nil {
		t.Fatal(err)
	}
	return NewExecutor(p, m)
}

func request(x inference.Tensor) *inference.Request {
	x.Name = "X"
	return &inference.Request{ID: "r1", ModelName: "ens", Inputs: []inference.Tensor{x}, Parameters: inference.Parameters{"priority": int64(2)}}
}

func TestSerialPipeline(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	m := &models{cfgs: map[string]*inferencepb.ModelConfig{"first": unit(t, "first", false), "second": unit(t, "second", false)}}
	m.run = map[string]func(context.Context, *inference.Request, inference.ResponseFunc) error{}
	for name, k := range map[string]int32{"first": 10, "second": 100} {
		f := add(k)
		m.run[name] = func(ctx context.Context, req *inference.Request, out inference.ResponseFunc) error {
			mu.Lock()
			seen = append(seen, req.ModelName+"/"+req.Inputs[0].Name+"/"+req.Outputs[0].Name)
			mu.Unlock()
			if p, _ := req.Parameters.Int("priority"); p != 2 || req.ID != "r1" {
				t.Errorf("step %s lost the request's id or parameters: %q %v", req.ModelName, req.ID, req.Parameters)
			}
			return f(ctx, req, out)
		}
	}
	e := build(t, pipeline, m)
	defer e.Close()
	req := request(i32(1, 2))
	rec := backendtest.NewRecorder(t, req)
	if err := e.Infer(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	ev := rec.Events()
	if len(ev) != 1 || !ev[0].Final || ev[0].Resp == nil {
		t.Fatalf("events %+v", ev)
	}
	resp := ev[0].Resp
	if resp.ModelName != "ens" || resp.ModelVersion != "1" || resp.ID != "r1" || len(resp.Outputs) != 1 || resp.Outputs[0].Name != "Z" {
		t.Fatalf("response %+v", resp)
	}
	if got := vals(resp.Outputs[0]); !slices.Equal(got, []int32{111, 112}) {
		t.Fatalf("Z = %v", got)
	}
	if !slices.Equal(seen, []string{"first/IN/OUT", "second/IN/OUT"}) {
		t.Fatalf("steps ran as %v", seen)
	}
	resp.Done()
}

// Independent branches run at the same time: each waits until the other
// has started.
func TestBranchesRunConcurrently(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var wg sync.WaitGroup
		wg.Add(2)
		branch := func(k int32) func(context.Context, *inference.Request, inference.ResponseFunc) error {
			f := add(k)
			return func(ctx context.Context, req *inference.Request, out inference.ResponseFunc) error {
				wg.Done()
				wg.Wait() // deadlocks (and synctest says so) unless both run at once
				time.Sleep(time.Second)
				return f(ctx, req, out)
			}
		}
		m := &models{
			cfgs: map[string]*inferencepb.ModelConfig{"left": unit(t, "left", false), "right": unit(t, "right", false), "join": two(t, "join")},
			run:  map[string]func(context.Context, *inference.Request, inference.ResponseFunc) error{"left": branch(1), "right": branch(2), "join": add(0)},
		}
		e := build(t, diamond, m)
		defer e.Close()
		req := request(i32(5))
		rec := backendtest.NewRecorder(t, req)
		start := time.Now()
		if err := e.Infer(context.Background(), req); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != time.Second {
			t.Errorf("the diamond took %v, not one branch's second", d)
		}
		ev := rec.Events()
		if got := vals(ev[0].Resp.Outputs[0]); !slices.Equal(got, []int32{13}) {
			t.Fatalf("Z = %v", got)
		}
	})
}

// A failing step fails the request with its model named, and the branch
// still running is cancelled.
func TestFailureCancelsOtherSteps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cancelled := make(chan struct{})
		m := &models{
			cfgs: map[string]*inferencepb.ModelConfig{"left": unit(t, "left", false), "right": unit(t, "right", false), "join": two(t, "join")},
			run: map[string]func(context.Context, *inference.Request, inference.ResponseFunc) error{
				"left": func(ctx context.Context, _ *inference.Request, _ inference.ResponseFunc) error {
					time.Sleep(time.Millisecond)
					return inference.InvalidArg("left does not like its input")
				},
				"right": func(ctx context.Context, _ *inference.Request, _ inference.ResponseFunc) error {
					<-ctx.Done()
					close(cancelled)
					return inference.Errorf(inference.CodeCancelled, "cancelled")
				},
				"join": func(context.Context, *inference.Request, inference.ResponseFunc) error {
					t.Error("join ran without its inputs")
					return nil
				},
			},
		}
		e := build(t, diamond, m)
		defer e.Close()
		req := request(i32(5))
		backendtest.NewRecorder(t, req)
		err := e.Infer(context.Background(), req)
		if inference.CodeOf(err) != inference.CodeInvalidArg || !strings.Contains(err.Error(), "model 'left'") || !strings.Contains(err.Error(), "does not like") {
			t.Fatalf("error %v", err)
		}
		select {
		case <-cancelled:
		default:
			t.Fatal("the right branch was not cancelled")
		}
	})
}

// A decoupled step's every response runs the steps after it once more, and
// each makes one ensemble response; then the final flag comes alone.
func TestDecoupledStepFansOut(t *testing.T) {
	m := &models{
		cfgs: map[string]*inferencepb.ModelConfig{"first": unit(t, "first", true), "second": unit(t, "second", false)},
		run: map[string]func(context.Context, *inference.Request, inference.ResponseFunc) error{
			"first": func(_ context.Context, req *inference.Request, out inference.ResponseFunc) error {
				n := vals(req.Inputs[0])[0]
				for k := int32(0); k < n; k++ {
					o := i32(k)
					o.Name = "OUT"
					if err := out(&inference.Response{Outputs: []inference.Tensor{o}}, false); err != nil {
						return err
					}
				}
				return out(nil, true)
			},
			"second": add(100),
		},
	}
	e := build(t, pipeline, m)
	defer e.Close()
	if !e.plan.Decoupled() {
		t.Fatal("an ensemble with a decoupled step is not decoupled")
	}
	for _, n := range []int32{0, 1, 3} {
		req := request(i32(n))
		rec := backendtest.NewRecorder(t, req)
		if err := e.Infer(context.Background(), req); err != nil {
			t.Fatal(err)
		}
		ev := rec.Events()
		if len(ev) != int(n)+1 || !ev[n].Final || ev[n].Resp != nil {
			t.Fatalf("n=%d: events %+v", n, ev)
		}
		var got []int32
		for _, x := range ev[:n] {
			got = append(got, vals(x.Resp.Outputs[0])...)
			x.Resp.Done()
		}
		slices.Sort(got)
		want := []int32{}
		for k := int32(0); k < n; k++ {
			want = append(want, 100+k)
		}
		if !slices.Equal(got, want) && (len(got) != 0 || len(want) != 0) {
			t.Fatalf("n=%d: outputs %v, want %v", n, got, want)
		}
	}
}

// Step responses are released once the ensemble's response is done with.
func TestStepResponsesReleased(t *testing.T) {
	var released int
	var mu sync.Mutex
	withRelease := func(k int32) func(context.Context, *inference.Request, inference.ResponseFunc) error {
		return func(ctx context.Context, req *inference.Request, out inference.ResponseFunc) error {
			return add(k)(ctx, req, func(resp *inference.Response, final bool) error {
				resp.Release = func() { mu.Lock(); released++; mu.Unlock() }
				return out(resp, final)
			})
		}
	}
	m := &models{
		cfgs: map[string]*inferencepb.ModelConfig{"first": unit(t, "first", false), "second": unit(t, "second", false)},
		run:  map[string]func(context.Context, *inference.Request, inference.ResponseFunc) error{"first": withRelease(1), "second": withRelease(2)},
	}
	e := build(t, pipeline, m)
	defer e.Close()
	req := request(i32(1))
	rec := backendtest.NewRecorder(t, req)
	if err := e.Infer(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if released != 0 {
		t.Fatalf("%d step responses released while the ensemble's response is still held", released)
	}
	rec.Events()[0].Resp.Done()
	if released != 2 {
		t.Fatalf("%d of 2 step responses released", released)
	}
}

func TestCloseRefusesNewRequests(t *testing.T) {
	m := &models{cfgs: map[string]*inferencepb.ModelConfig{"first": unit(t, "first", false), "second": unit(t, "second", false)}}
	e := build(t, pipeline, m)
	e.Close()
	req := request(i32(1))
	backendtest.NewRecorder(t, req)
	if err := e.Infer(context.Background(), req); inference.CodeOf(err) != inference.CodeUnavailable {
		t.Fatalf("after Close: %v", err)
	}
}

func TestValidation(t *testing.T) {
	base := map[string]*inferencepb.ModelConfig{
		"first": unit(t, "first", false), "second": unit(t, "second", false),
		"dec1": unit(t, "dec1", true), "dec2": unit(t, "dec2", true), "join": two(t, "join"),
		"fp32":     parse(t, `name: "fp32" backend: "fake" input [{ name: "IN" data_type: TYPE_FP32 dims: [ -1 ] }] output [{ name: "OUT" data_type: TYPE_FP32 dims: [ -1 ] }]`),
		"fixed":    parse(t, `name: "fixed" backend: "fake" input [{ name: "IN" data_type: TYPE_INT32 dims: [ 4 ] }] output [{ name: "OUT" data_type: TYPE_INT32 dims: [ 4 ] }]`),
		"batching": parse(t, `name: "batching" backend: "fake" max_batch_size: 4 input [{ name: "IN" data_type: TYPE_INT32 dims: [ -1 ] }] output [{ name: "OUT" data_type: TYPE_INT32 dims: [ -1 ] }]`),
	}
	head := `name: "ens" platform: "ensemble" max_batch_size: 0
input [{ name: "X" data_type: TYPE_INT32 dims: [ -1 ] }]
output [{ name: "Z" data_type: TYPE_INT32 dims: [ -1 ] }]
ensemble_scheduling { step [`
	step := func(model, in, inT, out, outT string) string {
		return `{ model_name: "` + model + `" model_version: -1 input_map { key: "` + in + `" value: "` + inT + `" } output_map { key: "` + out + `" value: "` + outT + `" } },`
	}
	for _, tc := range []struct {
		name, text, want string
	}{
		{"unknown model", head + step("nope", "IN", "X", "OUT", "Z") + "] }",
			"ensemble 'ens': step 0: composing model 'nope' is not available"},
		{"unknown input", head + step("first", "INX", "X", "OUT", "Z") + "] }",
			"ensemble 'ens': step 0: model 'first' has no input 'INX' (input_map maps it from ensemble tensor 'X')"},
		{"unknown output", head + step("first", "IN", "X", "OUTX", "Z") + "] }",
			"ensemble 'ens': step 0: model 'first' has no output 'OUTX' (output_map maps it to ensemble tensor 'Z')"},
		{"no producer", head + step("first", "IN", "W", "OUT", "Z") + "] }",
			"ensemble 'ens': step 0: ensemble tensor 'W' (input 'IN' of model 'first') is neither an ensemble input nor any step's output"},
		{"output not produced", head + step("first", "IN", "X", "OUT", "Y") + "] }",
			"ensemble 'ens': ensemble output 'Z' is not produced by any step (no output_map maps to it)"},
		{"input unused", `name: "ens" platform: "ensemble" input [{ name: "X" data_type: TYPE_INT32 dims: [ -1 ] }, { name: "UNUSED" data_type: TYPE_INT32 dims: [ -1 ] }]
output [{ name: "Z" data_type: TYPE_INT32 dims: [ -1 ] }] ensemble_scheduling { step [` + step("first", "IN", "X", "OUT", "Z") + "] }",
			"ensemble 'ens': ensemble input 'UNUSED' is not read by any step"},
		{"datatype", head + step("fp32", "IN", "X", "OUT", "Z") + "] }",
			"ensemble 'ens': step 0: input 'IN' of model 'fp32' is FP32, but its ensemble tensor 'X' is INT32 (ensemble input 'X')"},
		{"shape", `name: "ens" platform: "ensemble" input [{ name: "X" data_type: TYPE_INT32 dims: [ 3 ] }]
output [{ name: "Z" data_type: TYPE_INT32 dims: [ -1 ] }] ensemble_scheduling { step [` + step("fixed", "IN", "X", "OUT", "Z") + "] }",
			"ensemble 'ens': step 0: input 'IN' of model 'fixed' has shape [4], but its ensemble tensor 'X' has shape [3] (ensemble input 'X')"},
		{"batch size", `name: "ens" platform: "ensemble" max_batch_size: 8 input [{ name: "X" data_type: TYPE_INT32 dims: [ -1 ] }]
output [{ name: "Z" data_type: TYPE_INT32 dims: [ -1 ] }] ensemble_scheduling { step [` + step("batching", "IN", "X", "OUT", "Z") + "] }",
			"ensemble 'ens': allows maximum batch size 8, but it contains model 'batching' (step 0) which only allows maximum batch size 4"},
		{"cycle", head + step("first", "IN", "X", "OUT", "Y") + `{ model_name: "join" input_map [{ key: "A" value: "Y" }, { key: "B" value: "W" }] output_map { key: "OUT" value: "Z" } },` +
			step("second", "IN", "Z", "OUT", "W") + "] }",
			"ensemble 'ens': steps [1 2 1] form a cycle"},
		{"tensor written twice", head + step("first", "IN", "X", "OUT", "Z") + step("second", "IN", "X", "OUT", "Z") + "] }",
			"ensemble tensor 'Z' can appear in an output map only once for ensemble 'ens' step 1"},
		{"independent decoupled steps joined", head + step("dec1", "IN", "X", "OUT", "L") + step("dec2", "IN", "X", "OUT", "R") +
			`{ model_name: "join" input_map [{ key: "A" value: "L" }, { key: "B" value: "R" }] output_map { key: "OUT" value: "Z" } }] }`,
			"ensemble 'ens': step 2 (model 'join') depends on the decoupled steps 0 and 1, neither of which feeds the other"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := strings.ReplaceAll(tc.text, "},]", "}]") // step() leaves a comma
			_, err := Build(context.Background(), parse(t, text), 1, &models{cfgs: base})
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("error\n%v\nwant prefix\n%s", err, tc.want)
			}
			var ie *inference.Error
			if !errors.As(err, &ie) || ie.Code != inference.CodeInvalidArg {
				t.Errorf("error class %v", err)
			}
		})
	}
}

// router is a fake route model: SEL 0 sends X out as A, anything else as B.
func router(t *testing.T) *inferencepb.ModelConfig {
	return parse(t, `name: "router" backend: "route"
input [{ name: "SEL" data_type: TYPE_INT32 dims: [ 1 ] }, { name: "X" data_type: TYPE_INT32 dims: [ -1 ] }]
output [{ name: "A" data_type: TYPE_INT32 dims: [ -1 ] }, { name: "B" data_type: TYPE_INT32 dims: [ -1 ] }]`)
}

func routeRun(_ context.Context, req *inference.Request, out inference.ResponseFunc) error {
	if len(req.Outputs) != 0 {
		return inference.Internal("a route step asked for outputs %v", req.Outputs)
	}
	var sel, x inference.Tensor
	for _, in := range req.Inputs {
		if in.Name == "SEL" {
			sel = in
		} else {
			x = in
		}
	}
	x.Name = "B"
	if vals(sel)[0] == 0 {
		x.Name = "A"
	}
	return out(&inference.Response{Outputs: []inference.Tensor{x}}, true)
}

const routed = `name: "ens" platform: "ensemble"
input [{ name: "SEL" data_type: TYPE_INT32 dims: [ 1 ] }, { name: "X" data_type: TYPE_INT32 dims: [ -1 ] }]
output [{ name: "Z" data_type: TYPE_INT32 dims: [ -1 ] }]
ensemble_scheduling { step [
  { model_name: "router" input_map [{ key: "SEL" value: "SEL" }, { key: "X" value: "X" }] output_map [{ key: "A" value: "TO_A" }, { key: "B" value: "TO_B" }] },
  { model_name: "first" input_map { key: "IN" value: "TO_A" } output_map { key: "OUT" value: "Z" } },
  { model_name: "second" input_map { key: "IN" value: "TO_B" } output_map { key: "OUT" value: "Z" } }
] }`

// After a route step only the chosen branch runs, and the branches may
// write the same ensemble tensor.
func TestRouteRunsOneBranch(t *testing.T) {
	var mu sync.Mutex
	ran := map[string]int{}
	counted := func(name string, f func(context.Context, *inference.Request, inference.ResponseFunc) error) func(context.Context, *inference.Request, inference.ResponseFunc) error {
		return func(ctx context.Context, req *inference.Request, out inference.ResponseFunc) error {
			mu.Lock()
			ran[name]++
			mu.Unlock()
			return f(ctx, req, out)
		}
	}
	m := &models{
		cfgs: map[string]*inferencepb.ModelConfig{"router": router(t), "first": unit(t, "first", false), "second": unit(t, "second", false)},
		run: map[string]func(context.Context, *inference.Request, inference.ResponseFunc) error{
			"router": routeRun, "first": counted("first", add(10)), "second": counted("second", add(20)),
		},
	}
	m.cfgs["router"].Backend = "route"
	e := build(t, routed, m)
	defer e.Close()
	for _, tc := range []struct {
		sel  int32
		want int32
		ran  string
	}{{0, 11, "first"}, {1, 21, "second"}} {
		s := i32(tc.sel)
		s.Name = "SEL"
		x := i32(1)
		x.Name = "X"
		req := &inference.Request{ModelName: "ens", Inputs: []inference.Tensor{s, x}}
		rec := backendtest.NewRecorder(t, req)
		clear(ran)
		if err := e.Infer(context.Background(), req); err != nil {
			t.Fatal(err)
		}
		ev := rec.Events()
		if got := vals(ev[0].Resp.Outputs[0]); got[0] != tc.want || len(ran) != 1 || ran[tc.ran] != 1 {
			t.Fatalf("SEL %d: Z = %v, steps run %v", tc.sel, got, ran)
		}
	}
}

// Two steps may write one tensor only on different branches of one route.
func TestSharedOutputNeedsExclusiveBranches(t *testing.T) {
	cfgs := map[string]*inferencepb.ModelConfig{"router": router(t), "first": unit(t, "first", false), "second": unit(t, "second", false)}
	cfgs["router"].Backend = "route"
	sameBranch := strings.Replace(routed, `{ key: "IN" value: "TO_B" }`, `{ key: "IN" value: "TO_A" }`, 1)
	_, err := Build(context.Background(), parse(t, sameBranch), 1, &models{cfgs: cfgs})
	if err == nil || !strings.Contains(err.Error(), "ensemble tensor 'Z' can appear in an output map only once for ensemble 'ens' step 2") {
		t.Fatalf("both on branch A: %v", err)
	}
	cfgs["router"].Backend = "fake" // not a route model: its outputs are not branches
	if _, err := Build(context.Background(), parse(t, routed), 1, &models{cfgs: cfgs}); err == nil {
		t.Fatal("a shared output after a plain model was accepted")
	}
}

func TestReadyFollowsComposingModels(t *testing.T) {
	m := &models{cfgs: map[string]*inferencepb.ModelConfig{"first": unit(t, "first", false), "second": unit(t, "second", false)}}
	e := build(t, pipeline, m)
	defer e.Close()
	if !e.Ready(context.Background()) {
		t.Fatal("not ready with every composing model served")
	}
	delete(m.cfgs, "second")
	if e.Ready(context.Background()) {
		t.Fatal("ready although 'second' is gone")
	}
}

// fakeSpan records what the executor reports of a traced request.
type fakeSpan struct {
	model    string
	mu       sync.Mutex
	children []*fakeSpan
	served   string // "version start<end"
	finished bool
}

func (s *fakeSpan) Child(model string) inference.Span {
	c := &fakeSpan{model: model}
	s.mu.Lock()
	s.children = append(s.children, c)
	s.mu.Unlock()
	return c
}

func (s *fakeSpan) Attach(req *inference.Request) { req.Span = s }

func (s *fakeSpan) Served(req *inference.Request, version string, start, end time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.served = fmt.Sprintf("%s %s %v", req.ModelName, version, start.Before(end) || start.Equal(end))
}

func (s *fakeSpan) Finish() {
	s.mu.Lock()
	s.finished = true
	s.mu.Unlock()
}

// A traced ensemble request traces each step as a child of its span, the
// step's request carrying the child (so a nested ensemble nests further);
// an untraced request opens none.
func TestStepsTracedAsChildren(t *testing.T) {
	m := &models{cfgs: map[string]*inferencepb.ModelConfig{"first": unit(t, "first", false), "second": unit(t, "second", false)}}
	var mu sync.Mutex
	spans := map[string]inference.Span{}
	m.run = map[string]func(context.Context, *inference.Request, inference.ResponseFunc) error{}
	for _, name := range []string{"first", "second"} {
		f := add(1)
		m.run[name] = func(ctx context.Context, req *inference.Request, out inference.ResponseFunc) error {
			mu.Lock()
			spans[req.ModelName] = req.Span
			mu.Unlock()
			return f(ctx, req, func(resp *inference.Response, final bool) error {
				if resp != nil {
					resp.ModelVersion = "7"
				}
				return out(resp, final)
			})
		}
	}
	e := build(t, pipeline, m)
	defer e.Close()

	req := request(i32(1))
	rec := backendtest.NewRecorder(t, req)
	if err := e.Infer(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	rec.Events()[0].Resp.Done()
	if spans["first"] != nil || spans["second"] != nil {
		t.Fatalf("an untraced request traced its steps: %v", spans)
	}

	root := &fakeSpan{model: "ens"}
	req = request(i32(1))
	req.Span = root
	rec = backendtest.NewRecorder(t, req)
	if err := e.Infer(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	rec.Events()[0].Resp.Done()
	if len(root.children) != 2 {
		t.Fatalf("%d children, want one per step", len(root.children))
	}
	for k, name := range []string{"first", "second"} {
		c := root.children[k]
		if c.model != name || !c.finished || c.served != name+" 7 true" || spans[name] != inference.Span(c) {
			t.Errorf("step %s: child %+v, step span %v", name, c, spans[name])
		}
	}
}
