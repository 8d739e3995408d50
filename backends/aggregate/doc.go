// Package aggregate is a backend that combines several inputs of one shape
// into a single output: the gather step of an ensemble that scatters a
// request to several models and merges what they answer (averaging,
// voting, concatenating).
//
// # Configuration
//
// A model has one or more inputs, any names, which must all have the same
// data_type and dims, and exactly one output. Inputs may be FP32, FP64,
// INT8/16/32/64 or UINT8/16/32/64; FP16, BF16, BOOL and STRING are refused,
// and so are optional inputs, ragged batching and reshape, none of which an
// element-wise combination can honour. The parameter "method" chooses the
// combination:
//
//   - mean, weighted_mean, max, min: element by element over the inputs.
//     The output has the inputs' dims and any supported data_type. The
//     arithmetic is done in float64; an integer output is rounded to the
//     nearest integer (halves away from zero) and clamped to its type's
//     range, NaN becoming 0. max and min pick an input's element, so
//     integers stay exact; a NaN input element makes the result NaN.
//   - vote: a hard majority vote, the output an integer type. With the
//     output's dims equal to the inputs' dims but the last one 1, and the
//     inputs' last dim larger than 1 (or -1), each input is a row of class
//     scores and votes for its highest-scoring class (the lowest index
//     among equal scores; NaN scores never win). With the output's dims
//     equal to the inputs' dims, the inputs are integer and every element
//     is a class index vote; the output type must then hold every value of
//     the input type (so a vote never has to be clamped). The class with
//     the most votes wins, the lowest class among equals.
//   - argmax: a soft vote: the element-wise mean of the inputs' scores,
//     then the index of the highest mean along the last dimension (the
//     lowest among equals, NaN never winning). The output's dims are the
//     inputs' with the last one 1, its data_type an integer type that can
//     hold the largest class index.
//   - concat: the inputs joined along their last dimension, in config
//     order. The output has the inputs' data_type, and their dims with the
//     last one N times as large (-1 where the inputs' is -1).
//
// The optional parameter "weights" is a comma-separated list of
// non-negative numbers, one per input in config order and not all zero.
// weighted_mean needs it; vote counts each input's vote with its weight,
// argmax averages with them; mean, max, min and concat refuse it. Any
// other parameter is refused, so a misspelt key does not go unnoticed.
//
// A batching model (max_batch_size > 0) keeps the batch dimension in front
// of the configured dims; every operation is per batch item. Variable dims
// (-1) are allowed: at run time every input of a request must have the
// same shape.
//
// # Errors
//
// Every configuration the backend cannot serve fails at load with an
// invalid-argument or unsupported error naming the model and the parameter,
// input or output at fault. At run time a request whose inputs differ in
// shape fails with invalid argument. Such a failure fails the whole
// batch it is in, which is sound because it depends on shapes alone and
// the batchers batch only requests of the same shapes (ragged batching is
// refused); a request's values never make it fail.
//
// Outputs are freshly allocated, little-endian like every inference.Tensor.
package aggregate
