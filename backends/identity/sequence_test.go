package identity

import (
	"context"
	"testing"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// TestSequenceInputsCount: control and state inputs, which only the
// sequence_batching section declares, can be echoed, and a state output
// not listed as an output is produced.
func TestSequenceInputsCount(t *testing.T) {
	i32 := inferencepb.DataType_TYPE_INT32
	cfg := &inferencepb.ModelConfig{
		Name:   "seq",
		Input:  []*inferencepb.ModelInput{tensorCfg("INPUT0", i32)},
		Output: []*inferencepb.ModelOutput{outCfg("OUTPUT1", i32), outCfg("OUTPUT2", inferencepb.DataType_TYPE_STRING)},
		SchedulingChoice: &inferencepb.ModelConfig_SequenceBatching{SequenceBatching: &inferencepb.ModelSequenceBatching{
			ControlInput: []*inferencepb.ModelSequenceBatching_ControlInput{
				{Name: "INPUT1", Control: []*inferencepb.ModelSequenceBatching_Control{{
					Kind: inferencepb.ModelSequenceBatching_Control_CONTROL_SEQUENCE_START, Int32FalseTrue: []int32{0, 1}}}},
				{Name: "INPUT2", Control: []*inferencepb.ModelSequenceBatching_Control{{
					Kind: inferencepb.ModelSequenceBatching_Control_CONTROL_SEQUENCE_CORRID, DataType: inferencepb.DataType_TYPE_STRING}}},
			},
			State: []*inferencepb.ModelSequenceBatching_State{{InputName: "INPUT3", OutputName: "OUTPUT3", DataType: i32, Dims: []int64{1}}},
		}},
	}
	m, err := Backend{}.Load(context.Background(), spec(cfg))
	if err != nil {
		t.Fatal(err)
	}
	inst, err := m.NewInstance(context.Background(), backends.InstanceSpec{})
	if err != nil {
		t.Fatal(err)
	}
	req := &inference.Request{Inputs: []inference.Tensor{
		{Name: "INPUT0", DataType: inference.Int32, Shape: []int64{1}, Data: make([]byte, 4)},
		{Name: "INPUT1", DataType: inference.Int32, Shape: []int64{1}, Data: []byte{1, 0, 0, 0}},
		{Name: "INPUT2", DataType: inference.Bytes, Shape: []int64{1}, Data: inference.AppendBytesElement(nil, []byte("id"))},
		{Name: "INPUT3", DataType: inference.Int32, Shape: []int64{1}, Data: []byte{7, 0, 0, 0}},
	}}
	resps, err := execute(context.Background(), inst, []*inference.Request{req})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"OUTPUT1", "OUTPUT2", "OUTPUT3"} {
		if resps[0].Output(name) == nil {
			t.Errorf("no %s in %+v", name, resps[0].Outputs)
		}
	}
	if got := resps[0].Output("OUTPUT3").Data[0]; got != 7 {
		t.Errorf("state output %d, want the state input 7", got)
	}
}
