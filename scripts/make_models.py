#!/usr/bin/env python3
"""Writes the ONNX models of the example repository.

    python scripts/make_models.py model_repo_examples [--testdata DIR]
    python scripts/make_models.py --tensorflow model_repo_examples [--testdata DIR]
    python scripts/make_models.py --mlp-large DIR

makes, for each model below, <repo>/<name>/config.pbtxt and
<repo>/<name>/1/model.onnx. The output is deterministic: the same script
with the same pinned `onnx` and `numpy` (tests/e2e/requirements.txt) writes
the same bytes, so the committed files change only when this script does.
`make models` reruns it when its content changes; it also writes the
models of the Go tests of backends/onnxruntime (--testdata).

The models are Triton's documented example models with the same names,
tensors and semantics, as ONNX graphs, plus identity_fp32 (load tests),
mlp_fp32 (real compute that benefits from batching) and two stateful
sequence models (implicit state of fixed and of growing size). The
end-to-end tests import the helpers below to build their own ONNX test
models.

With --tensorflow it writes the TensorFlow models instead (SavedModels and
a GraphDef, see the TensorFlow section below) and, with --testdata, those
of the Go tests of backends/tensorflow. That part needs the pinned
TensorFlow (tensorflow-cpu 2.21.0, the version `make tf` installs the
library of) in the interpreter that runs it; neither `make models` nor CI
runs it: its output is committed.

With --mlp-large it writes only mlp_large (config.pbtxt and 50 MiB of
weights), the dynamic batcher's example: too large to commit, so
`make bench-batching` writes it into .perf/models (ignored).
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# ONNX Runtime 1.24 runs every opset up to 23 and IR versions up to 11;
# these older ones keep the files loadable by older runtimes too.
OPSET = 17
IR_VERSION = 8
PRODUCER = "nereid scripts/make_models.py"

# Protocol datatype -> (ONNX element type, config.pbtxt data type).
TYPES = {
    "BOOL": (TensorProto.BOOL, "TYPE_BOOL"),
    "UINT8": (TensorProto.UINT8, "TYPE_UINT8"),
    "UINT16": (TensorProto.UINT16, "TYPE_UINT16"),
    "UINT32": (TensorProto.UINT32, "TYPE_UINT32"),
    "UINT64": (TensorProto.UINT64, "TYPE_UINT64"),
    "INT8": (TensorProto.INT8, "TYPE_INT8"),
    "INT16": (TensorProto.INT16, "TYPE_INT16"),
    "INT32": (TensorProto.INT32, "TYPE_INT32"),
    "INT64": (TensorProto.INT64, "TYPE_INT64"),
    "FP16": (TensorProto.FLOAT16, "TYPE_FP16"),
    "FP32": (TensorProto.FLOAT, "TYPE_FP32"),
    "FP64": (TensorProto.DOUBLE, "TYPE_FP64"),
    "BYTES": (TensorProto.STRING, "TYPE_STRING"),
    "BF16": (TensorProto.BFLOAT16, "TYPE_BF16"),
}


def value_info(name: str, datatype: str, shape: list) -> onnx.ValueInfoProto:
    """A graph input or output; a str in shape is a symbolic (variable) dim."""
    return helper.make_tensor_value_info(name, TYPES[datatype][0], shape)


def make_model(name: str, nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(list(nodes), name, list(inputs), list(outputs), list(initializers))
    model = helper.make_model(
        graph, producer_name=PRODUCER, opset_imports=[helper.make_opsetid("", OPSET)]
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def config_text(
    name: str,
    max_batch_size: int,
    inputs: list,
    outputs: list,
    comment: str = "",
    extra: str = "",
) -> str:
    """config.pbtxt for an ONNX model. inputs/outputs: (name, datatype, dims)."""

    def tensors(kind, items):
        entries = []
        for tname, datatype, dims in items:
            entries.append(
                "  {\n"
                f'    name: "{tname}"\n'
                f"    data_type: {TYPES[datatype][1]}\n"
                f"    dims: [ {', '.join(str(d) for d in dims)} ]\n"
                "  }"
            )
        return f"{kind} [\n" + ",\n".join(entries) + "\n]\n"

    head = "".join(f"# {line}\n" if line else "#\n" for line in comment.strip().splitlines())
    return (
        head
        + f'name: "{name}"\n'
        + 'platform: "onnxruntime_onnx"\n'
        + f"max_batch_size: {max_batch_size}\n"
        + tensors("input", inputs)
        + tensors("output", outputs)
        + extra
    )


def identity_model(name: str, tensors: list, batch: bool = True) -> onnx.ModelProto:
    """INPUTi -> Identity -> OUTPUTi for each (datatype, dims) of tensors.

    dims may hold -1 for a variable dimension; with batch, a variable batch
    dimension comes first.
    """
    nodes, ins, outs = [], [], []
    for i, (datatype, dims) in enumerate(tensors):
        shape = [f"d{i}_{j}" if d == -1 else d for j, d in enumerate(dims)]
        if batch:
            shape = ["batch"] + shape
        ins.append(value_info(f"INPUT{i}", datatype, shape))
        outs.append(value_info(f"OUTPUT{i}", datatype, shape))
        nodes.append(helper.make_node("Identity", [f"INPUT{i}"], [f"OUTPUT{i}"], name=f"identity{i}"))
    return make_model(name, nodes, ins, outs)


def add_sub_model(name: str, datatype: str, compute: str | None = None) -> onnx.ModelProto:
    """OUTPUT0 = INPUT0 + INPUT1 and OUTPUT1 = INPUT0 - INPUT1 on [batch, 16].

    With compute, the inputs are cast to that type, added and subtracted
    there, and the results cast back: ONNX Runtime has no INT8 Add and its
    Cast parses and prints decimal strings.
    """
    shape = ["batch", 16]
    nodes = []
    a, b = "INPUT0", "INPUT1"
    if compute:
        to = TYPES[compute][0]
        nodes += [
            helper.make_node("Cast", ["INPUT0"], ["a"], to=to, name="cast_a"),
            helper.make_node("Cast", ["INPUT1"], ["b"], to=to, name="cast_b"),
        ]
        a, b = "a", "b"
    sum_name, diff_name = ("sum", "diff") if compute else ("OUTPUT0", "OUTPUT1")
    nodes += [
        helper.make_node("Add", [a, b], [sum_name], name="add"),
        helper.make_node("Sub", [a, b], [diff_name], name="sub"),
    ]
    if compute:
        back = TYPES[datatype][0]
        nodes += [
            helper.make_node("Cast", ["sum"], ["OUTPUT0"], to=back, name="cast_sum"),
            helper.make_node("Cast", ["diff"], ["OUTPUT1"], to=back, name="cast_diff"),
        ]
    ins = [value_info("INPUT0", datatype, shape), value_info("INPUT1", datatype, shape)]
    outs = [value_info("OUTPUT0", datatype, shape), value_info("OUTPUT1", datatype, shape)]
    return make_model(name, nodes, ins, outs)


MLP_IN, MLP_HIDDEN, MLP_OUT = 64, 512, 16


def mlp_weights() -> list:
    """The MLP's (weight, bias) per layer, He-initialised from a fixed seed:
    the ONNX and the TensorFlow versions share them."""
    rng = np.random.default_rng(20240229)
    sizes = [MLP_IN, MLP_HIDDEN, MLP_HIDDEN, MLP_OUT]
    out = []
    for n_in, n_out in zip(sizes, sizes[1:]):
        w = (rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)).astype(np.float32)
        b = (rng.standard_normal(n_out) * 0.01).astype(np.float32)
        out.append((w, b))
    return out


def mlp_model(name: str) -> onnx.ModelProto:
    """[batch, 64] -> Gemm 512 -> Relu -> Gemm 512 -> Relu -> Gemm 16, FP32.

    Weights are He-initialised from a fixed seed, so the file and its
    outputs are the same on every run.
    """
    return gemm_relu_chain(name, mlp_weights())


def gemm_relu_chain(name: str, layers: list) -> onnx.ModelProto:
    """[batch, in] -> (Gemm -> Relu) per layer but the last -> Gemm, FP32;
    layers: (weight [in, out], bias [out]) per layer."""
    nodes, inits = [], []
    x = "INPUT0"
    for layer, (w, b) in enumerate(layers):
        inits += [numpy_helper.from_array(w, f"w{layer}"), numpy_helper.from_array(b, f"b{layer}")]
        last = layer == len(layers) - 1
        y = "OUTPUT0" if last else f"h{layer}"
        gemm_out = y if last else f"g{layer}"
        nodes.append(helper.make_node("Gemm", [x, f"w{layer}", f"b{layer}"], [gemm_out], name=f"gemm{layer}"))
        if not last:
            nodes.append(helper.make_node("Relu", [gemm_out], [y], name=f"relu{layer}"))
        x = y
    ins = [value_info("INPUT0", "FP32", ["batch", layers[0][0].shape[0]])]
    outs = [value_info("OUTPUT0", "FP32", ["batch", layers[-1][0].shape[1]])]
    return make_model(name, nodes, ins, outs, inits)


# ---- mlp_large: the dynamic batcher's example --------------------------------
#
# Three 2048 x 2048 hidden layers, 50 MiB of FP32 weights: more than this
# kind of machine's caches hold, so one row costs about as much memory
# traffic as a batch of 32 and batching pays even on a CPU. Too large to
# commit: `make bench-batching` writes it into .perf/models (ignored) with
# --mlp-large; neither `make models` nor the example repository has it.

MLP_LARGE_SIZES = [256, 2048, 2048, 2048, 2048, 16]
MLP_LARGE_MAX_BATCH = 64


def mlp_large_model(name: str) -> onnx.ModelProto:
    rng = np.random.default_rng(20261203)
    layers = []
    for n_in, n_out in zip(MLP_LARGE_SIZES, MLP_LARGE_SIZES[1:]):
        w = (rng.standard_normal((n_in, n_out), dtype=np.float32) * np.float32(np.sqrt(2.0 / n_in)))
        b = (rng.standard_normal(n_out, dtype=np.float32) * np.float32(0.01))
        layers.append((w, b))
    return gemm_relu_chain(name, layers)


def write_mlp_large(repo: pathlib.Path, name: str = "mlp_large") -> None:
    write(repo, name, mlp_large_model(name), config_text(
        name, MLP_LARGE_MAX_BATCH, [("INPUT0", "FP32", [MLP_LARGE_SIZES[0]])],
        [("OUTPUT0", "FP32", [MLP_LARGE_SIZES[-1]])],
        f"An MLP {' -> '.join(map(str, MLP_LARGE_SIZES))} with ReLU, FP32, 50 MiB of\n"
        "weights (scripts/make_models.py --mlp-large): a batch of 32 rows costs\n"
        "little more than one row on a CPU, which is what the dynamic batcher is\n"
        "for (perf/batching.md). Two CPU instances, ONNX Runtime's default.",
        extra=(
            "dynamic_batching { }\n"
            "model_warmup [\n"
            "  {\n"
            '    name: "zeros"\n'
            "    batch_size: 1\n"
            "    inputs {\n"
            '      key: "INPUT0"\n'
            f"      value {{ data_type: TYPE_FP32 dims: [ {MLP_LARGE_SIZES[0]} ] zero_data: true }}\n"
            "    }\n"
            "  }\n"
            "]\n"
        ),
    ))


# ---- fruit: the ensemble examples ------------------------------------------
#
# Each fruit is four features, FP32: weight (per 100 g), diameter (per
# 10 cm), hue (0 red .. 1 orange) and skin roughness (0 smooth .. 1 rough).
# Oranges weigh about 1.5 with diameter 0.8, hue 0.9, roughness 0.8;
# apples about 1.6, 0.75, 0.2 and 0.1. Three classifiers (class 0 orange,
# 1 apple) look at different features, the size one weakly, so that they
# can disagree and a vote matters; three regressors price a fruit.

FRUIT_FEATURES = 4

# Per classifier: the orange logit's weights and bias; the apple logit is
# its negation, so PROBS is a two-class softmax.
FRUIT_CLASSIFIERS = {
    "fruit_hue": ([0.0, 0.0, 8.0, 0.0], -4.4),
    "fruit_skin": ([0.0, 0.0, 0.0, 8.0], -3.6),
    "fruit_size": ([-2.0, 6.0, 0.0, 0.0], -1.65),
}

# Per regressor: PRICE = weights . features + bias.
FRUIT_REGRESSORS = {
    "price_a": ([0.50, 0.20, 0.00, 0.00], 0.10),
    "price_b": ([0.60, 0.00, 0.00, 0.00], 0.05),
    "price_c": ([0.40, 0.30, 0.10, 0.00], 0.00),
}


def linear_model(name: str, weights, bias, classes: bool) -> onnx.ModelProto:
    """[batch, 4] -> MatMul + Add (+ Softmax over two classes), FP32."""
    w = np.array(weights, dtype=np.float32).reshape(FRUIT_FEATURES, 1)
    b = np.array([bias], dtype=np.float32)
    out = "PROBS" if classes else "PRICE"
    if classes:
        w = np.concatenate([w, -w], axis=1)
        b = np.array([bias, -bias], dtype=np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    nodes = [helper.make_node("MatMul", ["FEATURES", "w"], ["xw"]),
             helper.make_node("Add", ["xw", "b"], ["logits" if classes else out])]
    if classes:
        nodes.append(helper.make_node("Softmax", ["logits"], [out], axis=-1))
    width = 2 if classes else 1
    return make_model(name, nodes, [value_info("FEATURES", "FP32", ["batch", FRUIT_FEATURES])],
                      [value_info(out, "FP32", ["batch", width])], inits)


def write_fruit(repo: pathlib.Path) -> None:
    for name, (weights, bias) in FRUIT_CLASSIFIERS.items():
        write(repo, name, linear_model(name, weights, bias, classes=True), config_text(
            name, 8, [("FEATURES", "FP32", [FRUIT_FEATURES])], [("PROBS", "FP32", [2])],
            "A fruit classifier for the ensemble examples: PROBS are the\n"
            "probabilities of orange (0) and apple (1) from FEATURES (weight,\n"
            "diameter, hue, roughness). See scripts/make_models.py.",
            extra="dynamic_batching { }\n",
        ))
    for name, (weights, bias) in FRUIT_REGRESSORS.items():
        write(repo, name, linear_model(name, weights, bias, classes=False), config_text(
            name, 8, [("FEATURES", "FP32", [FRUIT_FEATURES])], [("PRICE", "FP32", [1])],
            "A fruit price regressor for the ensemble examples: PRICE from\n"
            "FEATURES (weight, diameter, hue, roughness). See scripts/make_models.py.",
            extra="dynamic_batching { }\n",
        ))


# ---- sequence models ---------------------------------------------------------
#
# The sequence batcher supplies the control inputs (shape [batch, 1]) and
# the implicit state inputs; the client sends INPUT only.


def int32_control(name: str, kind: str) -> str:
    return (
        "    {\n"
        f'      name: "{name}"\n'
        f"      control [ {{ kind: {kind} int32_false_true: [ 0, 1 ] }} ]\n"
        "    }"
    )


def corrid_control(data_type: str = "TYPE_UINT64") -> str:
    """The CORRID control input of the given data type."""
    return (
        "    {\n"
        '      name: "CORRID"\n'
        f"      control [ {{ kind: CONTROL_SEQUENCE_CORRID data_type: {data_type} }} ]\n"
        "    }"
    )


def sequence_batching_text(controls: list, fields: str = "", state: str = "") -> str:
    """sequence_batching { fields, control_input [controls], state }."""
    control = "  control_input [\n" + ",\n".join(controls) + "\n  ]\n" if controls else ""
    return "sequence_batching {\n" + fields + control + state + "}\n"


def simple_sequence_model(name: str) -> onnx.ModelProto:
    """Triton's simple_sequence: OUTPUT = READY * (INPUT + START).

    As Triton's own ONNX sequence models (qa/common/gen_qa_sequence_models.py)
    it keeps no accumulator: the first request of a sequence answers
    INPUT + 1, the others INPUT, padding rows (READY 0) zero. That is what
    Triton's example clients (simple_*_sequence_*_client.py) expect.
    """
    shape = ["batch", 1]
    nodes = [
        helper.make_node("Add", ["INPUT", "START"], ["sum"], name="add_start"),
        helper.make_node("Mul", ["sum", "READY"], ["OUTPUT"], name="mul_ready"),
    ]
    ins = [value_info(n, "INT32", shape) for n in ("INPUT", "START", "READY")]
    return make_model(name, nodes, ins, [value_info("OUTPUT", "INT32", shape)])


def simple_dyna_sequence_model(name: str, corrid: str = "UINT64") -> onnx.ModelProto:
    """Triton's simple_dyna_sequence:
    OUTPUT = READY * (INPUT + START + END * CORRID).

    The last request of a sequence adds its correlation ID (Triton's
    gen_qa_dyna_sequence_models.py; the example clients with --dyna). With
    corrid "BYTES" the ID is a string that must read as an integer (ONNX's
    Cast from string parses it), as Triton's simple_string_dyna_sequence.
    """
    shape = ["batch", 1]
    nodes = [
        helper.make_node("Cast", ["CORRID"], ["corrid"], to=TensorProto.INT32, name="cast_corrid"),
        helper.make_node("Mul", ["END", "corrid"], ["end_corrid"], name="mul_end"),
        helper.make_node("Add", ["INPUT", "START"], ["sum0"], name="add_start"),
        helper.make_node("Add", ["sum0", "end_corrid"], ["sum1"], name="add_corrid"),
        helper.make_node("Mul", ["sum1", "READY"], ["OUTPUT"], name="mul_ready"),
    ]
    ins = [value_info(n, "INT32", shape) for n in ("INPUT", "START", "END", "READY")]
    ins.append(value_info("CORRID", corrid, shape))
    return make_model(name, nodes, ins, [value_info("OUTPUT", "INT32", shape)])


def sequence_accumulator_model(name: str) -> onnx.ModelProto:
    """A running sum kept in implicit state, as Triton's implicit-state test
    models (qa/common/gen_qa_implicit_models.py):
    OUTPUT = OUTPUT_STATE = INPUT + INPUT_STATE * READY * (1 - START).
    """
    shape = ["batch", 1]
    one = numpy_helper.from_array(np.array(1, dtype=np.int32), "one")
    nodes = [
        helper.make_node("Sub", ["one", "START"], ["not_start"], name="not_start"),
        helper.make_node("Mul", ["READY", "not_start"], ["keep"], name="keep"),
        helper.make_node("Mul", ["INPUT_STATE", "keep"], ["kept"], name="kept"),
        helper.make_node("Add", ["INPUT", "kept"], ["OUTPUT"], name="accumulate"),
        helper.make_node("Identity", ["OUTPUT"], ["OUTPUT_STATE"], name="state"),
    ]
    ins = [value_info(n, "INT32", shape) for n in ("INPUT", "START", "READY", "INPUT_STATE")]
    outs = [value_info(n, "INT32", shape) for n in ("OUTPUT", "OUTPUT_STATE")]
    return make_model(name, nodes, ins, outs, [one])


def sequence_growable_model(name: str) -> onnx.ModelProto:
    """A state that grows by one element a step:
    OUTPUT_STATE = HISTORY = concat(INPUT_STATE, INPUT), OUTPUT = its sum.

    The state starts empty (initial_state of dims [0]); a batch holds only
    sequences whose states have the same length.
    """
    axis = numpy_helper.from_array(np.array([1], dtype=np.int64), "axis")
    nodes = [
        helper.make_node("Concat", ["INPUT_STATE", "INPUT"], ["OUTPUT_STATE"], axis=1, name="append"),
        helper.make_node("Identity", ["OUTPUT_STATE"], ["HISTORY"], name="history"),
        helper.make_node("ReduceSum", ["OUTPUT_STATE", "axis"], ["OUTPUT"], keepdims=1, name="sum"),
    ]
    ins = [value_info("INPUT", "INT32", ["batch", 1]), value_info("INPUT_STATE", "INT32", ["batch", "n"])]
    outs = [
        value_info("OUTPUT", "INT32", ["batch", 1]),
        value_info("HISTORY", "INT32", ["batch", "n_plus_1"]),
        value_info("OUTPUT_STATE", "INT32", ["batch", "n_plus_1"]),
    ]
    return make_model(name, nodes, ins, outs, [axis])


def write(repo: pathlib.Path, name: str, model: onnx.ModelProto, config: str | None) -> None:
    vdir = repo / name / "1"
    vdir.mkdir(parents=True, exist_ok=True)
    (vdir / "model.onnx").write_bytes(model.SerializeToString(deterministic=True))
    if config is not None:
        (repo / name / "config.pbtxt").write_text(config)


def add_sub_io(datatype):
    ins = [("INPUT0", datatype, [16]), ("INPUT1", datatype, [16])]
    outs = [("OUTPUT0", datatype, [16]), ("OUTPUT1", datatype, [16])]
    return ins, outs


def write_testdata(out: pathlib.Path) -> None:
    """Models for the Go tests of backends/onnxruntime (testdata/models)."""
    out.mkdir(parents=True, exist_ok=True)

    def save(name, model):
        (out / f"{name}.onnx").write_bytes(model.SerializeToString(deterministic=True))

    # Every protocol type, each INPUTi echoed to OUTPUTi, [batch, n].
    save("all_types", identity_model("all_types", [(dt, [-1]) for dt in TYPES]))
    # No variable first dimension: cannot batch.
    save("fixed_nobatch", identity_model("fixed_nobatch", [("FP32", [2, 3])], batch=False))
    # Only a batch dimension: auto-complete gives dims [1] and an empty reshape.
    save("batch_only", identity_model("batch_only", [("FP32", [])]))
    # A sequence model with a START control and an implicit state:
    # OUTPUT0 = STATE_OUT = INPUT0 + STATE_IN * (1 - START).
    shape = ["batch", 1]
    one = numpy_helper.from_array(np.array(1, dtype=np.int32), "one")
    save("sequence_acc", make_model("sequence_acc", [
        helper.make_node("Sub", ["one", "START"], ["keep"]),
        helper.make_node("Mul", ["STATE_IN", "keep"], ["kept"]),
        helper.make_node("Add", ["INPUT0", "kept"], ["OUTPUT0"]),
        helper.make_node("Identity", ["OUTPUT0"], ["STATE_OUT"]),
    ], [value_info(n, "INT32", shape) for n in ("INPUT0", "START", "STATE_IN")],
       [value_info(n, "INT32", shape) for n in ("OUTPUT0", "STATE_OUT")], [one]))
    # An output whose shape depends on the data, not only on input shapes.
    save("nonzero", make_model("nonzero", [helper.make_node("NonZero", ["INPUT0"], ["OUTPUT0"])],
                               [value_info("INPUT0", "FP32", ["n"])], [value_info("OUTPUT0", "INT64", [1, "count"])]))
    # Output dimensions named after input dimensions, in another order:
    # their sizes are known before the run.
    save("transpose", make_model("transpose", [helper.make_node("Transpose", ["INPUT0"], ["OUTPUT0"], perm=[1, 0])],
                                 [value_info("INPUT0", "FP32", ["rows", "cols"])],
                                 [value_info("OUTPUT0", "FP32", ["cols", "rows"])]))
    # An output that claims its input's dimension name but is twice as
    # long: a prediction from the names is wrong, and found to be.
    save("mislabeled", make_model("mislabeled", [helper.make_node("Concat", ["INPUT0", "INPUT0"], ["OUTPUT0"], axis=0)],
                                  [value_info("INPUT0", "FP32", ["n"])], [value_info("OUTPUT0", "FP32", ["n"])]))
    # A type Nereid cannot serve.
    x = helper.make_tensor_value_info("INPUT0", TensorProto.COMPLEX64, ["batch", 4])
    y = helper.make_tensor_value_info("OUTPUT0", TensorProto.COMPLEX64, ["batch", 4])
    save("complex", make_model("complex", [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])], [x], [y]))


def main(argv: list[str]) -> int:
    args = argv[1:]
    tensorflow = bool(args) and args[0] == "--tensorflow"
    if tensorflow:
        args = args[1:]
    mlp_large = bool(args) and args[0] == "--mlp-large"
    if mlp_large:
        args = args[1:]
    testdata = None
    if len(args) == 3 and args[1] == "--testdata":
        testdata = pathlib.Path(args[2])
        args = args[:1]
    if len(args) != 1:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print(f"usage: {argv[0]} [--tensorflow | --mlp-large] REPOSITORY_DIR [--testdata DIR]", file=sys.stderr)
        return 2
    repo = pathlib.Path(args[0])
    if mlp_large:
        write_mlp_large(repo)
        return 0
    if tensorflow:
        write_tensorflow(repo, testdata)
        return 0
    if testdata is not None:
        write_testdata(testdata)

    ins, outs = add_sub_io("INT32")
    write(repo, "simple", add_sub_model("simple", "INT32"), config_text(
        "simple", 8, ins, outs,
        "Triton's `simple` example as ONNX: OUTPUT0 = INPUT0 + INPUT1,\n"
        "OUTPUT1 = INPUT0 - INPUT1, element-wise over 16 INT32 values.",
    ))

    ins, outs = add_sub_io("INT8")
    write(repo, "simple_int8", add_sub_model("simple_int8", "INT8", compute="INT32"), config_text(
        "simple_int8", 8, ins, outs,
        "`simple` in INT8: sums and differences wrap around as INT8 does.",
    ))

    ins, outs = add_sub_io("BYTES")
    write(repo, "simple_string", add_sub_model("simple_string", "BYTES", compute="INT32"), config_text(
        "simple_string", 8, ins, outs,
        "`simple` on strings: each element holds a decimal integer; OUTPUT0 and\n"
        "OUTPUT1 hold the decimal sum and difference.",
    ))

    write(repo, "simple_identity", identity_model("simple_identity", [("BYTES", [-1])]), config_text(
        "simple_identity", 8, [("INPUT0", "BYTES", [-1])], [("OUTPUT0", "BYTES", [-1])],
        "Triton's `simple_identity`: returns its BYTES input, any length.",
    ))

    write(repo, "identity_fp32", identity_model("identity_fp32", [("FP32", [-1])]), config_text(
        "identity_fp32", 8, [("INPUT0", "FP32", [-1])], [("OUTPUT0", "FP32", [-1])],
        "Echoes INPUT0 to OUTPUT0 (ONNX Identity). Batching: requests carry a\n"
        "leading batch dimension of at most 8.",
    ))

    write(repo, "mlp_fp32", mlp_model("mlp_fp32"), config_text(
        "mlp_fp32", 64, [("INPUT0", "FP32", [MLP_IN])], [("OUTPUT0", "FP32", [MLP_OUT])],
        "A multi-layer perceptron, 64 -> 512 -> 512 -> 16 with ReLU, FP32: real\n"
        "compute that gains from batching. Warmed up with one zero sample.",
        extra=(
            "dynamic_batching { }\n"
            "model_warmup [\n"
            "  {\n"
            '    name: "zeros"\n'
            "    batch_size: 1\n"
            "    inputs {\n"
            '      key: "INPUT0"\n'
            f"      value {{ data_type: TYPE_FP32 dims: [ {MLP_IN} ] zero_data: true }}\n"
            "    }\n"
            "  }\n"
            "]\n"
        ),
    ))

    seq_io = ([("INPUT", "INT32", [1])], [("OUTPUT", "INT32", [1])])
    write(repo, "simple_sequence", simple_sequence_model("simple_sequence"), config_text(
        "simple_sequence", 8, *seq_io,
        "Triton's `simple_sequence` example as ONNX, with its configuration: the\n"
        "sequence batcher (direct) supplies START and READY, and\n"
        "OUTPUT = READY * (INPUT + START). Triton's example clients send\n"
        "[0, 11, 7, 5, 3, 2, 0, 1] and expect [1, 11, 7, 5, 3, 2, 0, 1].",
        extra=sequence_batching_text([
            int32_control("START", "CONTROL_SEQUENCE_START"),
            int32_control("READY", "CONTROL_SEQUENCE_READY"),
        ]) + "instance_group [ { kind: KIND_CPU } ]\n",
    ))

    def dyna_controls(corrid_type: str) -> list:
        return [
            int32_control("START", "CONTROL_SEQUENCE_START"),
            int32_control("END", "CONTROL_SEQUENCE_END"),
            int32_control("READY", "CONTROL_SEQUENCE_READY"),
            corrid_control(corrid_type),
        ]

    dyna_fields = (
        "  max_sequence_idle_microseconds: 10000000\n"
        "  oldest { max_candidate_sequences: 1024 max_queue_delay_microseconds: 10000 }\n"
    )
    write(repo, "simple_dyna_sequence", simple_dyna_sequence_model("simple_dyna_sequence"), config_text(
        "simple_dyna_sequence", 8, *seq_io,
        "Triton's `simple_dyna_sequence` example as ONNX, with its configuration:\n"
        "the oldest-first sequence batcher supplies START, END, READY and the\n"
        "UINT64 correlation ID, and OUTPUT = READY * (INPUT + START + END * CORRID).\n"
        "Triton's example clients (--dyna) send [0, 11, 7, 5, 3, 2, 0, 1] as\n"
        "sequence 1000 and expect [1, 11, 7, 5, 3, 2, 0, 1001].",
        extra=sequence_batching_text(dyna_controls("TYPE_UINT64"), fields=dyna_fields)
        + "instance_group [ { count: 2 kind: KIND_CPU } ]\n",
    ))

    write(repo, "simple_string_dyna_sequence",
          simple_dyna_sequence_model("simple_string_dyna_sequence", corrid="BYTES"), config_text(
              "simple_string_dyna_sequence", 8, *seq_io,
              "simple_dyna_sequence with string correlation IDs, as the model of that\n"
              "name Triton's example clients use with --dyna: CORRID is TYPE_STRING and\n"
              "must read as an integer. Sequence \"1002\" of [0, 11, 7, 5, 3, 2, 0, 1]\n"
              "answers [1, 11, 7, 5, 3, 2, 0, 1003].",
              extra=sequence_batching_text(dyna_controls("TYPE_STRING"), fields=dyna_fields)
              + "instance_group [ { count: 2 kind: KIND_CPU } ]\n",
          ))

    write(repo, "sequence_accumulator", sequence_accumulator_model("sequence_accumulator"), config_text(
        "sequence_accumulator", 8, *seq_io,
        "A running sum per sequence in implicit state: OUTPUT = INPUT on START,\n"
        "else the previous OUTPUT + INPUT. [0, 11, 7, 5, 3, 2, 0, 1] gives\n"
        "[0, 11, 18, 23, 26, 28, 28, 29]. The state output OUTPUT_STATE is not a\n"
        "declared output: responses do not carry it.",
        extra=sequence_batching_text(
            [
                int32_control("START", "CONTROL_SEQUENCE_START"),
                int32_control("READY", "CONTROL_SEQUENCE_READY"),
            ],
            fields="  max_sequence_idle_microseconds: 5000000\n",
            state=(
                "  state [\n"
                "    {\n"
                '      input_name: "INPUT_STATE"\n'
                '      output_name: "OUTPUT_STATE"\n'
                "      data_type: TYPE_INT32\n"
                "      dims: [ 1 ]\n"
                "    }\n"
                "  ]\n"
            ),
        ) + "instance_group [ { count: 1 kind: KIND_CPU } ]\n",
    ))

    write(repo, "sequence_growable", sequence_growable_model("sequence_growable"), config_text(
        "sequence_growable", 8, [("INPUT", "INT32", [1])],
        [("OUTPUT", "INT32", [1]), ("HISTORY", "INT32", [-1])],
        "Implicit state of variable size: each step appends INPUT to the\n"
        "sequence's state, which starts empty. HISTORY is the state after the\n"
        "step (every input so far, one more element a step) and OUTPUT its sum.\n"
        "The sequence batcher resets the state on START, so the model needs no\n"
        "control input; the oldest-first strategy batches only sequences whose\n"
        "states have the same length.",
        extra=sequence_batching_text(
            [],
            fields=(
                "  max_sequence_idle_microseconds: 5000000\n"
                "  oldest { max_candidate_sequences: 8 }\n"
            ),
            state=(
                "  state [\n"
                "    {\n"
                '      input_name: "INPUT_STATE"\n'
                '      output_name: "OUTPUT_STATE"\n'
                "      data_type: TYPE_INT32\n"
                "      dims: [ -1 ]\n"
                "      initial_state {\n"
                '        name: "empty"\n'
                "        data_type: TYPE_INT32\n"
                "        dims: [ 0 ]\n"
                "        zero_data: true\n"
                "      }\n"
                "    }\n"
                "  ]\n"
            ),
        ) + "instance_group [ { count: 1 kind: KIND_CPU } ]\n",
    ))
    write_fruit(repo)
    return 0


# ---- TensorFlow ----------------------------------------------------------------
#
# SavedModels (a tf.Module with a serving_default signature whose keys are
# the tensor names config.pbtxt uses, as Triton maps them) and a GraphDef
# (its Placeholder and op names are the configured names). Made with
# --tensorflow by the pinned TensorFlow; their bytes are committed.

TF_PRODUCER = "nereid scripts/make_models.py (tensorflow)"


def tf_config_text(name, platform, max_batch_size, inputs, outputs, comment="", extra=""):
    """config.pbtxt of a TensorFlow model; inputs/outputs None are left to
    auto-complete, max_batch_size None too."""
    text = config_text(name, max_batch_size or 0, inputs or [], outputs or [], comment, extra)
    text = text.replace('platform: "onnxruntime_onnx"', f'platform: "{platform}"')
    if max_batch_size is None:
        text = text.replace("max_batch_size: 0\n", "")
    if inputs is None:
        text = text.replace("input [\n\n]\n", "")
    if outputs is None:
        text = text.replace("output [\n\n]\n", "")
    return text


def write_tensorflow(repo: pathlib.Path, testdata: pathlib.Path | None) -> None:
    import os
    import shutil

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.random.set_seed(0)

    def save(module, path: pathlib.Path, signatures) -> None:
        if path.exists():
            shutil.rmtree(path)
        tf.saved_model.save(module, str(path), signatures=signatures)
        # fingerprint.pb carries a random UUID (and the loader does without
        # it); assets/ is empty and would not survive git anyway.
        (path / "fingerprint.pb").unlink()
        (path / "assets").rmdir()

    def savedmodel(name: str, module, signatures, config: str | None) -> None:
        save(module, repo / name / "1" / "model.savedmodel", signatures)
        if config is not None:
            (repo / name / "config.pbtxt").write_text(config)

    def spec(name, dtype, shape):
        return tf.TensorSpec(shape, dtype, name=name)

    # simple_savedmodel: the SavedModel twin of `simple`.
    class AddSub(tf.Module):
        @tf.function(input_signature=[spec("INPUT0", tf.int32, [None, 16]), spec("INPUT1", tf.int32, [None, 16])])
        def serve(self, INPUT0, INPUT1):  # noqa: N803 (the signature keys)
            return {"OUTPUT0": INPUT0 + INPUT1, "OUTPUT1": INPUT0 - INPUT1}

    m = AddSub()
    ins, outs = add_sub_io("INT32")
    savedmodel("simple_savedmodel", m, {"serving_default": m.serve}, tf_config_text(
        "simple_savedmodel", "tensorflow_savedmodel", 8, ins, outs,
        "Triton's `simple` example as a TensorFlow SavedModel: OUTPUT0 = INPUT0 +\n"
        "INPUT1, OUTPUT1 = INPUT0 - INPUT1, element-wise over 16 INT32 values.\n"
        "The tensor names are the keys of the serving_default signature.",
        extra="instance_group [ { count: 1 kind: KIND_CPU } ]\n",
    ))

    # simple_string_savedmodel: `simple` on decimal strings; the
    # configuration leaves everything but the platform to auto-complete.
    class StringAddSub(tf.Module):
        @tf.function(input_signature=[spec("INPUT0", tf.string, [None, 16]), spec("INPUT1", tf.string, [None, 16])])
        def serve(self, INPUT0, INPUT1):  # noqa: N803
            a = tf.strings.to_number(INPUT0, out_type=tf.int32)
            b = tf.strings.to_number(INPUT1, out_type=tf.int32)
            return {"OUTPUT0": tf.strings.as_string(a + b), "OUTPUT1": tf.strings.as_string(a - b)}

    m = StringAddSub()
    savedmodel("simple_string_savedmodel", m, {"serving_default": m.serve}, tf_config_text(
        "simple_string_savedmodel", "tensorflow_savedmodel", None, None, None,
        "`simple` on strings as a TensorFlow SavedModel: each element of the BYTES\n"
        "inputs holds a decimal integer; OUTPUT0 and OUTPUT1 hold the decimal sum\n"
        "and difference. An element that is not a number fails its request.\n"
        "Everything but the platform is auto-completed from the signature:\n"
        "inputs, outputs, max_batch_size (4) and dynamic batching.",
        extra="instance_group [ { count: 1 kind: KIND_CPU } ]\n",
    ))

    # mlp_savedmodel: the MLP of mlp_fp32, same weights, as variables.
    class MLP(tf.Module):
        def __init__(self):
            super().__init__()
            self.layers = [(tf.Variable(w, name=f"w{i}"), tf.Variable(b, name=f"b{i}"))
                           for i, (w, b) in enumerate(mlp_weights())]

        @tf.function(input_signature=[spec("INPUT0", tf.float32, [None, MLP_IN])])
        def serve(self, INPUT0):  # noqa: N803
            x = INPUT0
            for i, (w, b) in enumerate(self.layers):
                x = tf.matmul(x, w) + b
                if i < len(self.layers) - 1:
                    x = tf.nn.relu(x)
            return {"OUTPUT0": x}

    m = MLP()
    savedmodel("mlp_savedmodel", m, {"serving_default": m.serve}, tf_config_text(
        "mlp_savedmodel", "tensorflow_savedmodel", 64, [("INPUT0", "FP32", [MLP_IN])], [("OUTPUT0", "FP32", [MLP_OUT])],
        "mlp_fp32 as a TensorFlow SavedModel (the same weights): 64 -> 512 -> 512\n"
        "-> 16 with ReLU, FP32, real compute that gains from batching. Warmed up\n"
        "with one zero sample.",
        extra=(
            "dynamic_batching { }\n"
            "model_warmup [\n"
            "  {\n"
            '    name: "zeros"\n'
            "    batch_size: 1\n"
            "    inputs {\n"
            '      key: "INPUT0"\n'
            f"      value {{ data_type: TYPE_FP32 dims: [ {MLP_IN} ] zero_data: true }}\n"
            "    }\n"
            "  }\n"
            "]\n"
        ),
    ))

    # simple_graphdef: `simple` in INT8 as a GraphDef (wrapping sums).
    def graphdef(build) -> bytes:
        g = tf.Graph()
        with g.as_default():
            build()
        return g.as_graph_def().SerializeToString(deterministic=True)

    def add_sub_graph(dtype):
        def build():
            a = tf.compat.v1.placeholder(dtype, [None, 16], name="INPUT0")
            b = tf.compat.v1.placeholder(dtype, [None, 16], name="INPUT1")
            tf.identity(a + b, name="OUTPUT0")
            tf.identity(a - b, name="OUTPUT1")
        return build

    ins, outs = add_sub_io("INT8")
    vdir = repo / "simple_graphdef" / "1"
    vdir.mkdir(parents=True, exist_ok=True)
    (vdir / "model.graphdef").write_bytes(graphdef(add_sub_graph(tf.int8)))
    (repo / "simple_graphdef" / "config.pbtxt").write_text(tf_config_text(
        "simple_graphdef", "tensorflow_graphdef", 8, ins, outs,
        "`simple` in INT8 as a TensorFlow GraphDef: sums and differences wrap\n"
        "around as INT8 does. A GraphDef's configuration is never auto-completed:\n"
        "inputs name its Placeholders, outputs its operations (op or op:index).",
        extra="instance_group [ { count: 1 kind: KIND_CPU } ]\n",
    ))

    if testdata is None:
        return
    testdata.mkdir(parents=True, exist_ok=True)

    # Every protocol type, each INPUTi echoed to OUTPUTi, [batch, n].
    tf_types = {
        "BOOL": tf.bool, "UINT8": tf.uint8, "UINT16": tf.uint16, "UINT32": tf.uint32, "UINT64": tf.uint64,
        "INT8": tf.int8, "INT16": tf.int16, "INT32": tf.int32, "INT64": tf.int64, "FP16": tf.float16,
        "FP32": tf.float32, "FP64": tf.float64, "BYTES": tf.string, "BF16": tf.bfloat16,
    }

    def all_types():
        for i, dtype in enumerate(tf_types.values()):
            x = tf.compat.v1.placeholder(dtype, [None, None], name=f"INPUT{i}")
            tf.identity(x, name=f"OUTPUT{i}")

    (testdata / "all_types.graphdef").write_bytes(graphdef(all_types))

    # A graph whose run fails on its data: CheckNumerics on a NaN.
    def check_numerics():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="INPUT0")
        tf.debugging.check_numerics(x, "INPUT0 holds a NaN or an infinity", name="OUTPUT0")

    (testdata / "check_numerics.graphdef").write_bytes(graphdef(check_numerics))

    # A SavedModel with two signatures and a fixed, non-batching shape.
    class TwoSignatures(tf.Module):
        @tf.function(input_signature=[spec("X", tf.float32, [2, 3])])
        def double(self, X):  # noqa: N803
            return {"Y": X * 2.0}

        @tf.function(input_signature=[spec("X", tf.float32, [2, 3])])
        def negate(self, X):  # noqa: N803
            return {"Y": -X}

    m = TwoSignatures()
    save(m, testdata / "two_signatures.savedmodel", {"serving_default": m.double, "negate": m.negate})

    # A sequence model with a START control and an implicit state, as
    # backends/onnxruntime's sequence_acc: OUTPUT0 = STATE_OUT = INPUT0 +
    # STATE_IN * (1 - START).
    class SequenceAcc(tf.Module):
        @tf.function(input_signature=[spec(n, tf.int32, [None, 1]) for n in ("INPUT0", "START", "STATE_IN")])
        def serve(self, INPUT0, START, STATE_IN):  # noqa: N803
            out = INPUT0 + STATE_IN * (1 - START)
            return {"OUTPUT0": out, "STATE_OUT": tf.identity(out)}

    m = SequenceAcc()
    save(m, testdata / "sequence_acc.savedmodel", {"serving_default": m.serve})


if __name__ == "__main__":
    sys.exit(main(sys.argv))
