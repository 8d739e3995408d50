package repository

import (
	"testing"

	"google.golang.org/protobuf/encoding/prototext"
)

// FuzzParseConfig feeds arbitrary bytes through parsing, auto-completion,
// normalization and validation: any input must give a configuration or an
// error, never a panic, and an accepted configuration must stay accepted
// once printed and parsed again.
func FuzzParseConfig(f *testing.F) {
	seeds := []string{
		"",
		simpleConfig("m"),
		`name: "e" platform: "ensemble" input [ { name: "I" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "O" data_type: TYPE_FP32 dims: [ 1 ] } ]
ensemble_scheduling { step [ { model_name: "a" model_version: -1 input_map { key: "x" value: "I" } output_map { key: "y" value: "O" } } ] }`,
		`backend: "fake" max_batch_size: 4 dynamic_batching { preferred_batch_size: [ 2, 4 ] max_queue_delay_microseconds: 100 priority_levels: 2 default_priority_level: 1 }`,
		`backend: "fake" max_batch_size: 4 sequence_batching { oldest { max_candidate_sequences: 4 }
control_input [ { name: "START" control [ { kind: CONTROL_SEQUENCE_START fp32_false_true: [ 0, 1 ] } ] },
{ name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] } ] }`,
		`platform: "onnxruntime_onnx" input [ { name: "I" data_type: TYPE_FP32 dims: [ 2, -1, 3 ] reshape { shape: [ 6, -1 ] } } ]`,
		`backend: "fake" instance_group [ { kind: KIND_GPU gpus: [ 0, 1 ] count: 2 }, { kind: KIND_CPU } ] version_policy { specific { versions: [ 1, 3 ] } }`,
		`backend: "fake" batch_input [ { kind: BATCH_ITEM_SHAPE target_name: "S" data_type: TYPE_INT32 source_input: "I" } ]
input [ { name: "I" data_type: TYPE_FP32 dims: [ 1 ] } ]`,
		`name: "x.identity" input [ { name: "I" data_type: 42 dims: [ 0 ] } ]`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := parseConfigForFuzz(data)
		if err != nil || cfg == nil {
			return
		}
		text, err := prototext.Marshal(cfg)
		if err != nil {
			t.Fatalf("accepted config does not print: %v", err)
		}
		again, err := parseConfigForFuzz(text)
		if err != nil || again == nil {
			t.Fatalf("accepted config rejected after a round trip: %v\n%s", err, text)
		}
	})
}
