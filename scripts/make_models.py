#!/usr/bin/env python3
"""Writes the ONNX models of the example repository.

    python scripts/make_models.py model_repo_examples [--testdata DIR]

makes, for each model below, <repo>/<name>/config.pbtxt and
<repo>/<name>/1/model.onnx. The output is deterministic: the same script
with the same pinned `onnx` and `numpy` (tests/e2e/requirements.txt) writes
the same bytes, so the committed files change only when this script does.
`make models` reruns it when its content changes; it also writes the
models of the Go tests of backends/onnxruntime (--testdata).

The models are Triton's documented example models with the same names,
tensors and semantics, as ONNX graphs, plus identity_fp32 (load tests) and
mlp_fp32 (real compute that benefits from batching). The end-to-end tests
import the helpers below to build their own ONNX test models.
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


def mlp_model(name: str) -> onnx.ModelProto:
    """[batch, 64] -> Gemm 512 -> Relu -> Gemm 512 -> Relu -> Gemm 16, FP32.

    Weights are He-initialised from a fixed seed, so the file and its
    outputs are the same on every run.
    """
    rng = np.random.default_rng(20240229)
    sizes = [MLP_IN, MLP_HIDDEN, MLP_HIDDEN, MLP_OUT]
    nodes, inits = [], []
    x = "INPUT0"
    for layer, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        w = (rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)).astype(np.float32)
        b = (rng.standard_normal(n_out) * 0.01).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{layer}"), numpy_helper.from_array(b, f"b{layer}")]
        last = layer == len(sizes) - 2
        y = "OUTPUT0" if last else f"h{layer}"
        gemm_out = y if last else f"g{layer}"
        nodes.append(helper.make_node("Gemm", [x, f"w{layer}", f"b{layer}"], [gemm_out], name=f"gemm{layer}"))
        if not last:
            nodes.append(helper.make_node("Relu", [gemm_out], [y], name=f"relu{layer}"))
        x = y
    ins = [value_info("INPUT0", "FP32", ["batch", MLP_IN])]
    outs = [value_info("OUTPUT0", "FP32", ["batch", MLP_OUT])]
    return make_model(name, nodes, ins, outs, inits)


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
    # A type Nereid cannot serve.
    x = helper.make_tensor_value_info("INPUT0", TensorProto.COMPLEX64, ["batch", 4])
    y = helper.make_tensor_value_info("OUTPUT0", TensorProto.COMPLEX64, ["batch", 4])
    save("complex", make_model("complex", [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])], [x], [y]))


def main(argv: list[str]) -> int:
    args = argv[1:]
    testdata = None
    if len(args) == 3 and args[1] == "--testdata":
        testdata = pathlib.Path(args[2])
        args = args[:1]
    if len(args) != 1:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print(f"usage: {argv[0]} REPOSITORY_DIR [--testdata DIR]", file=sys.stderr)
        return 2
    repo = pathlib.Path(args[0])
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
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
