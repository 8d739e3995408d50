"""Nereid's implementation of the ``triton_python_backend_utils`` module.

Triton Python models do ``import triton_python_backend_utils as pb_utils``;
this module gives them the same names and behaviour when they run under
Nereid's Python backend. Everything that does not talk to the server works
in a plain interpreter (``auto_complete_config`` helpers, tensors, model
configuration helpers, unit tests of a model). Calls that need the server
(BLS, model control, metrics, cancellation checks) go through the
connection that ``nereid_stub.py`` installs in ``_conn``; without one they
raise ``TritonModelException``.

Only the standard library and numpy are used.
"""

import base64
import ctypes
import enum
import itertools
import json
import math
import struct
import sys
import threading

import numpy as np

# ---------------------------------------------------------------------------
# Constants (values are Triton's, so code comparing against them still works).

TRITONSERVER_REQUEST_FLAG_SEQUENCE_START = 1
TRITONSERVER_REQUEST_FLAG_SEQUENCE_END = 2
TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
TRITONSERVER_REQUEST_RELEASE_ALL = 1
TRITONSERVER_REQUEST_RELEASE_RESCHEDULE = 2


class MemoryType(enum.IntEnum):
    """Preferred memory kinds a BLS request may ask for."""

    TRITONSERVER_MEMORY_GPU = 0
    TRITONSERVER_MEMORY_CPU = 1


TRITONSERVER_MEMORY_GPU = MemoryType.TRITONSERVER_MEMORY_GPU
TRITONSERVER_MEMORY_CPU = MemoryType.TRITONSERVER_MEMORY_CPU

# The stub installs its connection here (see nereid_stub.py). None means the
# module runs outside a stub: pure helpers work, server calls raise.
_conn = None

# ---------------------------------------------------------------------------
# Data types.
#
# Protocol names (the wire uses these), the TRITONSERVER_DataType numbers
# that Tensor.triton_dtype() returns (they equal the TYPE_* numbers of the
# model configuration), and the numpy type used to hold the elements.
#
# BF16 has no numpy type. As in Triton, a BF16 tensor cannot be read with
# as_numpy(); it is exchanged through DLPack (to_dlpack / from_dlpack, which
# frameworks such as PyTorch understand). Internally its elements are kept
# as raw 16-bit words in a numpy uint16 array, which is what the DLPack
# capsule points at, relabelled as bfloat16.

_TYPES = (
    # protocol, enum, numpy type, config name
    ("BOOL", 1, np.bool_, "TYPE_BOOL"),
    ("UINT8", 2, np.uint8, "TYPE_UINT8"),
    ("UINT16", 3, np.uint16, "TYPE_UINT16"),
    ("UINT32", 4, np.uint32, "TYPE_UINT32"),
    ("UINT64", 5, np.uint64, "TYPE_UINT64"),
    ("INT8", 6, np.int8, "TYPE_INT8"),
    ("INT16", 7, np.int16, "TYPE_INT16"),
    ("INT32", 8, np.int32, "TYPE_INT32"),
    ("INT64", 9, np.int64, "TYPE_INT64"),
    ("FP16", 10, np.float16, "TYPE_FP16"),
    ("FP32", 11, np.float32, "TYPE_FP32"),
    ("FP64", 12, np.float64, "TYPE_FP64"),
    ("BYTES", 13, np.object_, "TYPE_STRING"),
    ("BF16", 14, np.uint16, "TYPE_BF16"),
)

_PROTO_TO_ENUM = {p: e for p, e, _, _ in _TYPES}
_ENUM_TO_PROTO = {e: p for p, e, _, _ in _TYPES}
# numpy dtype that holds a protocol datatype's elements (BF16 as uint16 words).
_PROTO_TO_NP = {p: np.dtype(t) for p, _, t, _ in _TYPES}
_CONFIG_TO_PROTO = {c: p for p, _, _, c in _TYPES}
_PROTO_TO_CONFIG = {p: c for p, _, _, c in _TYPES}

# numpy dtype -> protocol datatype, for the native-endian dtypes numpy makes.
_NP_TO_PROTO = {np.dtype(t): p for p, _, t, _ in _TYPES if p != "BF16"}

TRITON_STRING_TO_NUMPY = {
    "TYPE_BOOL": bool,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}


def _proto_of_dtype(dtype):
    """Protocol datatype of a numpy dtype, or None when Nereid cannot carry it."""
    p = _NP_TO_PROTO.get(dtype)
    if p is not None:
        return p
    kind = dtype.kind
    if kind in "SU":
        return "BYTES"
    if kind in "biuf" and not dtype.isnative:
        return _NP_TO_PROTO.get(dtype.newbyteorder("="))
    return None


def triton_to_numpy_type(data_type):
    """numpy type for a TRITONSERVER_DataType number (None when numpy has none)."""
    p = _ENUM_TO_PROTO.get(data_type)
    if p is None or p == "BF16":
        return None
    return _PROTO_TO_NP[p].type


def numpy_to_triton_type(data_type):
    """TRITONSERVER_DataType number for a numpy type or dtype (None if unknown)."""
    try:
        dt = np.dtype(data_type)
    except TypeError:
        return None
    if dt.kind == "S":
        return 13
    p = _NP_TO_PROTO.get(dt)
    return _PROTO_TO_ENUM[p] if p is not None else None


def triton_string_to_numpy(triton_type_string):
    """numpy type for a configuration type name such as ``"TYPE_FP32"``."""
    return TRITON_STRING_TO_NUMPY[triton_type_string]


# ---------------------------------------------------------------------------
# BYTES serialization: each element is a 4-byte little-endian length, then
# its bytes, elements in C order.

_U32 = struct.Struct("<I")


def _element_bytes(arr):
    """The elements of a BYTES-like array as a list of bytes objects, C order."""
    kind = arr.dtype.kind
    items = arr.ravel(order="C").tolist()
    if kind == "S":
        return items
    if kind == "U":
        return [s.encode("utf-8") for s in items]
    out = []
    for x in items:
        if isinstance(x, bytes):
            out.append(x)
        elif isinstance(x, str):
            out.append(x.encode("utf-8"))
        elif isinstance(x, (bytearray, memoryview)):
            out.append(bytes(x))
        else:
            out.append(str(x).encode("utf-8"))
    return out


def _serialize_elements(arr):
    parts = []
    pack = _U32.pack
    for s in _element_bytes(arr):
        parts.append(pack(len(s)))
        parts.append(s)
    return b"".join(parts)


def serialize_byte_tensor(input_tensor):
    """Serialize a BYTES numpy array (object, ``S`` or ``U`` dtype) into bytes
    in the length-prefixed layout. Returns None for other dtypes."""
    if input_tensor.dtype.kind not in "OSU":
        return None
    if input_tensor.size == 0:
        return b""
    return _serialize_elements(input_tensor)


def _deserialize_bytes(blob):
    """Parse the length-prefixed layout from a bytes object into a list."""
    out = []
    pos = 0
    end = len(blob)
    unpack = _U32.unpack_from
    while pos < end:
        if pos + 4 > end:
            raise ValueError("truncated BYTES tensor: a length prefix is cut off")
        (n,) = unpack(blob, pos)
        pos += 4
        if pos + n > end:
            raise ValueError("truncated BYTES tensor: an element runs past the end")
        out.append(blob[pos : pos + n])
        pos += n
    return out


def _object_array(items):
    arr = np.empty(len(items), dtype=np.object_)
    arr[:] = items
    return arr


def deserialize_bytes_tensor(encoded_tensor):
    """Parse length-prefixed BYTES data into a 1-D numpy object array of bytes."""
    if isinstance(encoded_tensor, np.ndarray):
        blob = encoded_tensor.tobytes()
    else:
        blob = bytes(encoded_tensor)
    return _object_array(_deserialize_bytes(blob))


# ---------------------------------------------------------------------------
# Errors.


class TritonModelException(Exception):
    """Raised by pb_utils calls that fail, and by models to fail a call."""

    def message(self):
        return str(self)


class TritonError:
    """An error carried by an InferenceResponse (not an exception)."""

    UNKNOWN = 0
    INTERNAL = 1
    NOT_FOUND = 2
    INVALID_ARG = 3
    UNAVAILABLE = 4
    UNSUPPORTED = 5
    ALREADY_EXISTS = 6
    CANCELLED = 7

    __slots__ = ("_message", "_code")

    def __init__(self, message, code=INTERNAL):
        if message is None:
            raise TypeError("TritonError message must not be None")
        if code is None:
            raise TypeError("TritonError code must not be None")
        self._message = str(message)
        self._code = int(code)

    def message(self):
        return self._message

    def code(self):
        return self._code

    def __str__(self):
        return self._message

    def __repr__(self):
        return "TritonError(%r, code=%s)" % (
            self._message,
            _CODE_NAMES.get(self._code, self._code),
        )


_CODE_NAMES = {
    0: "UNKNOWN",
    1: "INTERNAL",
    2: "NOT_FOUND",
    3: "INVALID_ARG",
    4: "UNAVAILABLE",
    5: "UNSUPPORTED",
    6: "ALREADY_EXISTS",
    7: "CANCELLED",
}
_CODE_NUMBERS = {v: k for k, v in _CODE_NAMES.items()}


def _error_to_wire(err):
    return {"code": _CODE_NAMES.get(err._code, "INTERNAL"), "msg": err._message}


def _error_from_wire(obj):
    code = _CODE_NUMBERS.get(obj.get("code"), TritonError.INTERNAL)
    return TritonError(obj.get("msg", ""), code)


# ---------------------------------------------------------------------------
# DLPack helpers (CPU only). numpy produces and consumes the capsules; for
# BF16 the capsule's dtype code is rewritten between bfloat (4) and
# unsigned int (1), the element bits being the same 16-bit words.

_DL_CPU = 1
_DL_CUDA_HOST = 3
_DL_UINT = 1
_DL_BFLOAT = 4

_capsule_get_name = ctypes.pythonapi.PyCapsule_GetName
_capsule_get_name.restype = ctypes.c_char_p
_capsule_get_name.argtypes = [ctypes.py_object]
_capsule_get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_get_pointer.restype = ctypes.c_void_p
_capsule_get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


def _dl_tensor_address(capsule):
    """Address of the DLTensor inside a DLPack capsule."""
    name = _capsule_get_name(capsule)
    ptr = _capsule_get_pointer(capsule, name)
    if name == b"dltensor":
        return ptr  # DLManagedTensor starts with its DLTensor
    if name == b"dltensor_versioned":
        # DLManagedTensorVersioned: version (8), manager_ctx (8), deleter (8),
        # flags (8), then the DLTensor.
        return ptr + 32
    raise TritonModelException(
        "not an unused DLPack capsule (its name is %r)" % (name,)
    )


# Offsets inside a DLTensor (64-bit): data 0, device {type, id} 8, ndim 16,
# dtype {code u8, bits u8, lanes u16} 20.


def _dl_read(capsule):
    base = _dl_tensor_address(capsule)
    dev_type = ctypes.c_int32.from_address(base + 8).value
    code = ctypes.c_uint8.from_address(base + 20).value
    bits = ctypes.c_uint8.from_address(base + 21).value
    return base, dev_type, code, bits


def _is_capsule(obj):
    return type(obj).__name__ == "PyCapsule"


class _CapsuleHolder:
    """Hands an existing capsule to numpy.from_dlpack."""

    __slots__ = ("_capsule",)

    def __init__(self, capsule):
        self._capsule = capsule

    def __dlpack__(self, **_kwargs):
        return self._capsule

    def __dlpack_device__(self):
        return (_DL_CPU, 0)


# ---------------------------------------------------------------------------
# Tensor.


class Tensor:
    """A named tensor: an input of a request or an output of a response.

    ``Tensor(name, numpy_array)``; the datatype follows the numpy dtype
    (bool -> BOOL, integers, float16/32/64, object / ``S`` / ``U`` -> BYTES).
    """

    __slots__ = ("_name", "_arr", "_dt", "__weakref__")

    def __init__(self, name, numpy_array, triton_dtype=None):
        if not isinstance(name, str):
            raise TritonModelException("Tensor name must be a string")
        if name == "":
            raise TritonModelException("Tensor name cannot be an empty string.")
        arr = numpy_array
        if not isinstance(arr, np.ndarray):
            arr = np.asarray(arr)
        if triton_dtype is not None:
            dt = triton_dtype
            if not isinstance(dt, str):
                dt = _ENUM_TO_PROTO.get(int(dt))
            elif dt not in _PROTO_TO_NP:
                dt = _CONFIG_TO_PROTO.get(dt)
            if dt is None:
                raise TritonModelException(
                    "unknown Triton datatype %r" % (triton_dtype,)
                )
            if dt != "BYTES" and arr.dtype != _PROTO_TO_NP[dt]:
                arr = arr.view(_PROTO_TO_NP[dt])
        else:
            dt = _proto_of_dtype(arr.dtype)
            if dt is None:
                raise TritonModelException(
                    "numpy dtype %s cannot be used for a tensor: use bool, an "
                    "integer or float type, or np.object_ for BYTES" % (arr.dtype,)
                )
            if not arr.dtype.isnative and dt != "BYTES":
                arr = arr.astype(arr.dtype.newbyteorder("="))
        if not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr)
        self._name = name
        self._arr = arr
        self._dt = dt

    @classmethod
    def _wrap(cls, name, arr, dt):
        """A tensor over an array the caller guarantees is contiguous."""
        t = cls.__new__(cls)
        t._name = name
        t._arr = arr
        t._dt = dt
        return t

    def name(self):
        return self._name

    def as_numpy(self):
        if self._dt == "BF16":
            raise TritonModelException(
                "tensor '%s' is BF16, which numpy cannot represent; use "
                "to_dlpack() / from_dlpack() instead" % self._name
            )
        return self._arr

    def triton_dtype(self):
        return _PROTO_TO_ENUM[self._dt]

    def shape(self):
        return list(self._arr.shape)

    def is_cpu(self):
        return True

    def to_dlpack(self):
        return self.__dlpack__()

    def __dlpack__(self, stream=None, **kwargs):
        if self._dt == "BYTES":
            raise TritonModelException("DLPack does not support BYTES tensors.")
        if stream is not None and stream != -1:
            raise TritonModelException(
                "tensor '%s' is in CPU memory; a DLPack stream cannot be given"
                % self._name
            )
        kw = {k: v for k, v in kwargs.items() if k in ("max_version", "dl_device", "copy")}
        capsule = self._arr.__dlpack__(**kw)
        if self._dt == "BF16":
            base = _dl_tensor_address(capsule)
            ctypes.c_uint8.from_address(base + 20).value = _DL_BFLOAT
        return capsule

    def __dlpack_device__(self):
        return (_DL_CPU, 0)

    @staticmethod
    def from_dlpack(name, capsule):
        """A tensor over a DLPack capsule, or an object with ``__dlpack__``.

        The data is shared, not copied. Only CPU memory is supported."""
        if name == "":
            raise TritonModelException("Tensor name cannot be an empty string.")
        if _is_capsule(capsule):
            cap = capsule
        elif hasattr(capsule, "__dlpack__") and hasattr(capsule, "__dlpack_device__"):
            dev = capsule.__dlpack_device__()
            if int(dev[0]) not in (_DL_CPU, _DL_CUDA_HOST):
                raise TritonModelException(
                    "DLPack device type %s is not supported: Nereid's Python "
                    "backend handles CPU tensors only" % (dev[0],)
                )
            cap = capsule.__dlpack__()
        else:
            raise TritonModelException(
                "from_dlpack needs a DLPack capsule or an object with "
                "__dlpack__ and __dlpack_device__"
            )
        base, dev_type, code, bits = _dl_read(cap)
        if dev_type not in (_DL_CPU, _DL_CUDA_HOST):
            raise TritonModelException(
                "DLPack device type %s is not supported: Nereid's Python "
                "backend handles CPU tensors only" % dev_type
            )
        if dev_type != _DL_CPU:
            ctypes.c_int32.from_address(base + 8).value = _DL_CPU
        bf16 = code == _DL_BFLOAT and bits == 16
        if bf16:
            ctypes.c_uint8.from_address(base + 20).value = _DL_UINT
        arr = np.from_dlpack(_CapsuleHolder(cap))
        if not arr.flags.c_contiguous:
            raise TritonModelException(
                "DLPack tensor is not contiguous; only C-order contiguous "
                "tensors are supported"
            )
        if bf16:
            return Tensor._wrap(name, arr, "BF16")
        dt = _proto_of_dtype(arr.dtype)
        if dt is None or dt == "BYTES":
            raise TritonModelException(
                "DLPack dtype %s is not supported" % (arr.dtype,)
            )
        return Tensor._wrap(name, arr, dt)

    def __repr__(self):
        return "Tensor(%r, %s, shape=%s)" % (self._name, self._dt, list(self._arr.shape))


# ---------------------------------------------------------------------------
# Parameters (requests and responses): keys str, values bool/int/str.


def _check_parameters(parameters):
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise TritonModelException(
            "parameters must be a dict, got %s" % (type(parameters),)
        )
    for k, v in parameters.items():
        if not isinstance(k, str):
            raise TritonModelException(
                "parameter keys must be str, found type %s" % (type(k),)
            )
        if not isinstance(v, (bool, int, str)):
            raise TritonModelException(
                "parameter values must be bool/int/str, found type %s" % (type(v),)
            )
    return dict(parameters)


# ---------------------------------------------------------------------------
# Requests.


class PreferredMemory:
    """Where a BLS request would like its outputs (Nereid keeps all tensors in
    CPU memory; the preference is recorded only)."""

    __slots__ = ("preferred_memory_type", "preferred_device_id")

    def __init__(self, preferred_memory_type, preferred_device_id=0):
        self.preferred_memory_type = preferred_memory_type
        self.preferred_device_id = preferred_device_id


class InferenceTrace:
    """A request's trace handle (``request.trace()``). Given to a BLS request
    (``InferenceRequest(..., trace=request.trace())``), the BLS request is
    traced as a child of that request when it is sampled, as an ensemble's
    steps are. get_context() is None: Nereid hands no OpenTelemetry context
    to Python code."""

    __slots__ = ("_r",)

    def __init__(self, _r=0):
        self._r = _r

    def get_context(self):
        return None


_REQUIRED = object()


class InferenceRequest:
    """A request: the ones ``execute`` receives, and the ones a model builds
    to call another model (BLS)::

        pb_utils.InferenceRequest(model_name="m", inputs=[...],
                                  requested_output_names=["OUT"]).exec()
    """

    __slots__ = (
        "model_name",
        "_inputs",
        "_rid",
        "_cid",
        "_flags",
        "_timeout",
        "_params",
        "_params_json",
        "_out",
        "_version",
        "_preferred_memory",
        "_trace",
        "_r",
        "_sender",
        "_release_flags",
        "_conn",
    )

    def __init__(
        self,
        request_id="",
        correlation_id=0,
        inputs=_REQUIRED,
        requested_output_names=_REQUIRED,
        model_name=_REQUIRED,
        model_version=-1,
        flags=0,
        timeout=0,
        preferred_memory=None,
        trace=None,
        parameters=None,
    ):
        for arg, value in (
            ("inputs", inputs),
            ("requested_output_names", requested_output_names),
            ("model_name", model_name),
        ):
            if value is _REQUIRED or value is None:
                raise TypeError(
                    "InferenceRequest() needs the keyword argument '%s'" % arg
                )
        if not isinstance(model_name, str):
            raise TritonModelException("model_name must be a string")
        if request_id is None or not isinstance(request_id, str):
            raise TritonModelException("request_id must be a string")
        if isinstance(correlation_id, bool) or not isinstance(correlation_id, (int, str)):
            raise TritonModelException("Correlation ID must be integer or string")
        ins = list(inputs)
        for t in ins:
            if not isinstance(t, Tensor):
                raise TritonModelException(
                    "inputs must be pb_utils.Tensor objects, found type %s" % (type(t),)
                )
        names = []
        for n in requested_output_names:
            if not isinstance(n, str):
                raise TritonModelException("requested output names must be strings")
            if n not in names:
                names.append(n)
        self.model_name = model_name
        self._inputs = ins
        self._rid = request_id
        self._cid = correlation_id
        self._flags = int(flags)
        self._timeout = int(timeout)
        self._params = _check_parameters(parameters)
        self._params_json = None
        self._out = names
        self._version = int(model_version)
        self._preferred_memory = preferred_memory
        self._trace = trace
        self._r = None
        self._sender = None
        self._release_flags = TRITONSERVER_REQUEST_RELEASE_ALL
        self._conn = None

    @classmethod
    def _from_wire(cls, conn, model_name, version, w, inputs):
        """The request object ``execute`` receives for wire request ``w``."""
        req = cls.__new__(cls)
        req.model_name = model_name
        req._inputs = inputs
        req._rid = w.get("id") or ""
        req._cid = w.get("cid") or 0
        req._flags = w.get("fl") or 0
        req._timeout = w.get("to") or 0
        req._params = w.get("p") or {}
        req._params_json = None
        req._out = w.get("out") or []
        req._version = version
        req._preferred_memory = None
        req._trace = None
        req._r = w["r"]
        req._sender = None
        req._release_flags = TRITONSERVER_REQUEST_RELEASE_ALL
        req._conn = conn
        return req

    def inputs(self):
        return self._inputs

    def request_id(self):
        return self._rid

    def correlation_id(self):
        return self._cid

    def flags(self):
        return self._flags

    def set_flags(self, flags):
        self._flags = int(flags)

    def timeout(self):
        return self._timeout

    def parameters(self):
        if self._params_json is None:
            self._params_json = json.dumps(self._params)
        return self._params_json

    def requested_output_names(self):
        return self._out

    def trace(self):
        if self._trace is None:
            self._trace = InferenceTrace(self._r or 0)
        return self._trace

    def set_release_flags(self, flags):
        if flags == TRITONSERVER_REQUEST_RELEASE_RESCHEDULE:
            raise TritonModelException(
                "request rescheduling (TRITONSERVER_REQUEST_RELEASE_RESCHEDULE) "
                "is not supported by Nereid's Python backend"
            )
        if flags != TRITONSERVER_REQUEST_RELEASE_ALL:
            raise TritonModelException("unknown request release flags %r" % (flags,))
        self._release_flags = flags

    def get_response_sender(self):
        if self._r is None:
            raise TritonModelException(
                "get_response_sender() is only available on the requests that "
                "execute() receives"
            )
        if self._sender is None:
            self._sender = InferenceResponseSender(self._conn, self)
        return self._sender

    def is_cancelled(self):
        if self._r is None:
            return False
        return bool(_server_call("is_cancelled()", "cancelled", {"r": self._r}))

    def exec(self, decoupled=False):
        """Run this request on its model and wait. Returns an InferenceResponse
        (whose error() tells of a failure), or with ``decoupled=True`` an
        iterator over the responses, the last one carrying the final flag."""
        conn = self._bls_conn()
        return conn.bls(self, bool(decoupled))

    def async_exec(self, decoupled=False):
        """Like exec(), as an awaitable for ``async def execute``."""
        conn = self._bls_conn()
        return conn.bls_async(self, bool(decoupled))

    def _bls_conn(self):
        if self._r is not None:
            raise TritonModelException(
                "exec() is for requests built with pb_utils.InferenceRequest(...), "
                "not for the requests execute() receives"
            )
        conn = _conn
        if conn is None:
            raise TritonModelException(
                "BLS requests need a running Nereid Python stub; they are not "
                "available outside a served model"
            )
        if not conn.calls_allowed:
            raise TritonModelException(
                "BLS requests are not available during auto_complete_config"
            )
        return conn

    def __repr__(self):
        return "InferenceRequest(model_name=%r, request_id=%r, inputs=%s)" % (
            self.model_name,
            self._rid,
            [t.name() for t in self._inputs],
        )


# ---------------------------------------------------------------------------
# Responses.


class InferenceResponse:
    """A response: output tensors, or an error, and optional parameters."""

    __slots__ = ("_tensors", "_error", "_params", "_params_json", "__weakref__")

    def __init__(self, output_tensors=None, error=None, parameters=None):
        if output_tensors is None:
            tensors = []
        elif isinstance(output_tensors, (list, tuple)):
            tensors = list(output_tensors)
        else:
            raise TritonModelException(
                "output_tensors must be a list of pb_utils.Tensor, got %s"
                % (type(output_tensors),)
            )
        for t in tensors:
            if not isinstance(t, Tensor):
                raise TritonModelException(
                    "output_tensors must hold pb_utils.Tensor objects, found type %s"
                    % (type(t),)
                )
        if error is not None and not isinstance(error, TritonError):
            if isinstance(error, str):
                error = TritonError(error)
            else:
                raise TritonModelException(
                    "error must be a pb_utils.TritonError, got %s" % (type(error),)
                )
        self._tensors = tensors
        self._error = error
        self._params = _check_parameters(parameters)
        self._params_json = None

    @classmethod
    def _wrap(cls, tensors, error, params):
        r = cls.__new__(cls)
        r._tensors = tensors
        r._error = error
        r._params = params
        r._params_json = None
        return r

    def output_tensors(self):
        return self._tensors

    def has_error(self):
        return self._error is not None

    def error(self):
        return self._error

    def parameters(self):
        if self._params_json is None:
            self._params_json = json.dumps(self._params)
        return self._params_json

    def __repr__(self):
        if self._error is not None:
            return "InferenceResponse(error=%r)" % (self._error,)
        return "InferenceResponse(%s)" % ([t.name() for t in self._tensors],)


class InferenceResponseSender:
    """Sends the responses of one request (decoupled models, or a single
    response of a model that is not decoupled)."""

    __slots__ = ("_conn", "_r", "_out", "_lock", "_closed", "_count", "_held", "_open")

    def __init__(self, conn, request):
        # Only the request's handle and requested outputs: a reference back
        # to the request would make a cycle that keeps its inputs alive.
        self._conn = conn
        self._r = request._r
        self._out = request._out
        self._lock = threading.Lock()
        self._closed = False
        self._count = 0
        # Not decoupled: the response waits here until execute() returns.
        self._held = None
        # Not decoupled: False once the batch's `done` has gone.
        self._open = True

    def send(self, response=None, flags=0):
        if flags != 0 and flags != TRITONSERVER_RESPONSE_COMPLETE_FINAL:
            raise TritonModelException("Unable to send response. Unsupported flag provided.")
        if response is None and flags == 0:
            raise TritonModelException(
                "Unable to send response. An InferenceResponse must be given "
                "when flags is 0."
            )
        if response is not None and not isinstance(response, InferenceResponse):
            raise TritonModelException(
                "Unable to send response. Expected a pb_utils.InferenceResponse, "
                "found type %s" % (type(response),)
            )
        final = flags == TRITONSERVER_RESPONSE_COMPLETE_FINAL
        conn = self._conn
        with self._lock:
            if not conn.decoupled:
                if response is not None and self._count > 0:
                    raise TritonModelException(
                        "Unable to send response. A model that is not decoupled "
                        "cannot send more than one response."
                    )
                if response is None and self._count == 0:
                    raise TritonModelException(
                        "Unable to send response. A model that is not decoupled "
                        "must send its response before the final flag."
                    )
            if self._closed:
                raise TritonModelException(
                    "Unable to send response. Response sender has been closed."
                )
            if conn.decoupled:
                conn.send_response(self._r, self._out, response, final)
            else:
                if not self._open:
                    raise TritonModelException(
                        "Unable to send response. A model that is not decoupled "
                        "must send its response before execute() returns."
                    )
                if response is not None:
                    self._held = response
            self._count += 1
            if final:
                self._closed = True

    def is_cancelled(self):
        return bool(_server_call("is_cancelled()", "cancelled", {"r": self._r}))

    def _close(self):
        with self._lock:
            self._closed = True
            self._open = False


class ResponseIterator:
    """The responses of a BLS request made with ``exec(decoupled=True)``.

    Yields every response in arrival order, including the last one, which
    carries the final flag and may hold no outputs."""

    __slots__ = ("_conn", "_call", "_done", "__weakref__")

    def __init__(self, conn, call):
        self._conn = conn
        self._call = call
        self._done = False

    def __iter__(self):
        return self

    def __next__(self):
        if self._done:
            raise StopIteration
        resp, final = self._call.queue.get()
        if final:
            self._done = True
        return resp

    def cancel(self):
        """Ask the server to cancel the request; its last response still comes."""
        if not self._done:
            self._conn.cancel_bls(self._call)

    def __del__(self):
        try:
            if not self._done:
                self._conn.abandon_bls(self._call)
        except Exception:
            pass


# ---------------------------------------------------------------------------
# Helpers over requests, responses and configurations.


def get_input_tensor_by_name(inference_request, name):
    for t in inference_request.inputs():
        if t.name() == name:
            return t
    return None


def get_output_tensor_by_name(inference_response, name):
    for t in inference_response.output_tensors():
        if t.name() == name:
            return t
    return None


def get_input_config_by_name(model_config, name):
    for inp in model_config.get("input", ()) or ():
        if inp.get("name") == name:
            return inp
    return None


def get_output_config_by_name(model_config, name):
    for out in model_config.get("output", ()) or ():
        if out.get("name") == name:
            return out
    return None


def using_decoupled_model_transaction_policy(model_config):
    policy = model_config.get("model_transaction_policy") or {}
    return bool(policy.get("decoupled", False))


def get_model_dir():
    """Directory that holds the model's ``model.py`` (its version directory)."""
    conn = _conn
    if conn is None:
        raise TritonModelException(
            "get_model_dir() needs a running Nereid Python stub"
        )
    return conn.model_dir


# ---------------------------------------------------------------------------
# ModelConfig, for auto_complete_config.


class ModelConfig:
    """The model configuration handed to ``auto_complete_config``.

    Only the batch size, the inputs and outputs, the scheduler (dynamic
    batching) and the transaction policy can be set; each setter refuses a
    change that contradicts what the configuration already says."""

    def __init__(self, model_config):
        if isinstance(model_config, (str, bytes, bytearray)):
            cfg = json.loads(model_config)
        elif isinstance(model_config, dict):
            cfg = json.loads(json.dumps(model_config))
        else:
            raise TypeError("ModelConfig needs a JSON string or a dict")
        if not isinstance(cfg, dict):
            raise TypeError("ModelConfig needs a JSON object")
        cfg.setdefault("name", "")
        cfg.setdefault("max_batch_size", 0)
        if cfg.get("input") is None:
            cfg["input"] = []
        if cfg.get("output") is None:
            cfg["output"] = []
        self._model_config = cfg

    def as_dict(self):
        return self._model_config

    def _name(self):
        return self._model_config.get("name", "")

    def set_max_batch_size(self, max_batch_size):
        current = int(self._model_config.get("max_batch_size") or 0)
        if current > max_batch_size:
            raise ValueError(
                "model '%s': the configuration sets max_batch_size %d, but "
                "auto_complete_config asks for the smaller max_batch_size %d"
                % (self._name(), current, max_batch_size)
            )
        self._model_config["max_batch_size"] = max_batch_size

    def set_dynamic_batching(self):
        for other in ("sequence_batching", "ensemble_scheduling"):
            if other in self._model_config:
                raise ValueError(
                    "model '%s': the configuration already uses '%s', so "
                    "auto_complete_config cannot set 'dynamic_batching'"
                    % (self._name(), other)
                )
        self._model_config.setdefault("dynamic_batching", {})

    def _add_tensor(self, what, key, tensor, allowed):
        if not isinstance(tensor, dict):
            raise ValueError(
                "model '%s': %s in auto_complete_config must be a dict"
                % (self._name(), what)
            )
        tname = tensor.get("name")
        for prop in tensor:
            if prop not in allowed:
                raise ValueError(
                    "model '%s': %s '%s' in auto_complete_config has the property "
                    "'%s'; only %s are allowed"
                    % (self._name(), what, tname, prop, ", ".join("'%s'" % a for a in allowed))
                )
        for prop in ("name", "data_type", "dims"):
            if prop not in tensor:
                raise ValueError(
                    "model '%s': %s '%s' in auto_complete_config lacks the "
                    "'%s' property" % (self._name(), what, tname, prop)
                )
        for current in self._model_config[key]:
            if current.get("name") != tname:
                continue
            cur_dt = current.get("data_type", "TYPE_INVALID")
            if cur_dt not in ("TYPE_INVALID", "", None) and cur_dt != tensor["data_type"]:
                raise ValueError(
                    "model '%s': the configuration gives %s '%s' the datatype %s, "
                    "but auto_complete_config gives %s"
                    % (self._name(), what, tname, cur_dt, tensor["data_type"])
                )
            cur_dims = current.get("dims")
            if cur_dims and list(cur_dims) != list(tensor["dims"]):
                raise ValueError(
                    "model '%s': the configuration gives %s '%s' the dims %s, "
                    "but auto_complete_config gives %s"
                    % (self._name(), what, tname, list(cur_dims), list(tensor["dims"]))
                )
            if (
                "optional" in current
                and "optional" in tensor
                and bool(current["optional"]) != bool(tensor["optional"])
            ):
                raise ValueError(
                    "model '%s': the configuration gives %s '%s' optional=%s, "
                    "but auto_complete_config gives optional=%s"
                    % (self._name(), what, tname, current["optional"], tensor["optional"])
                )
            current["data_type"] = tensor["data_type"]
            current["dims"] = list(tensor["dims"])
            if "optional" in tensor:
                current["optional"] = tensor["optional"]
            return
        entry = dict(tensor)
        entry["dims"] = list(tensor["dims"])
        self._model_config[key].append(entry)

    def add_input(self, input):
        self._add_tensor("input", "input", input, ("name", "data_type", "dims", "optional"))

    def add_output(self, output):
        self._add_tensor("output", "output", output, ("name", "data_type", "dims"))

    def set_model_transaction_policy(self, transaction_policy_dict):
        for prop in transaction_policy_dict:
            if prop != "decoupled":
                raise ValueError(
                    "model '%s': the transaction policy in auto_complete_config "
                    "has the property '%s'; only 'decoupled' is allowed"
                    % (self._name(), prop)
                )
        policy = self._model_config.setdefault("model_transaction_policy", {})
        if "decoupled" in transaction_policy_dict:
            want = transaction_policy_dict["decoupled"]
            if "decoupled" in policy and policy["decoupled"] != want:
                raise ValueError(
                    "model '%s': auto_complete_config cannot change the decoupled "
                    "transaction policy, which the configuration sets to '%s'"
                    % (self._name(), policy["decoupled"])
                )
            policy["decoupled"] = want


# ---------------------------------------------------------------------------
# Server calls: model control, metrics, cancellation.


def _server_call(what, op, args):
    conn = _conn
    if conn is None:
        raise TritonModelException(
            "%s needs a running Nereid Python stub; it is not available "
            "outside a served model" % what
        )
    if not conn.calls_allowed:
        raise TritonModelException(
            "%s is not available during auto_complete_config" % what
        )
    return conn.call(op, args)


def load_model(model_name, config="", files=None):
    """Load (or reload) a model; the server must be in explicit model control."""
    if model_name is None:
        raise TypeError("load_model() needs a model_name")
    if isinstance(config, dict):
        config = json.dumps(config)
    enc = {}
    if files:
        for path, content in files.items():
            if isinstance(content, str):
                content = content.encode("utf-8")
            enc[str(path)] = base64.b64encode(bytes(content)).decode("ascii")
    _server_call(
        "load_model()",
        "load",
        {"model": str(model_name), "config": config or None, "files": enc},
    )


def unload_model(model_name, unload_dependents=False):
    if model_name is None:
        raise TypeError("unload_model() needs a model_name")
    _server_call(
        "unload_model()",
        "unload",
        {"model": str(model_name), "dependents": bool(unload_dependents)},
    )


def is_model_ready(model_name, model_version=""):
    if model_name is None:
        raise TypeError("is_model_ready() needs a model_name")
    return bool(
        _server_call(
            "is_model_ready()",
            "model_ready",
            {"model": str(model_name), "version": str(model_version)},
        )
    )


_metric_ids = itertools.count(1)


class MetricKind(enum.IntEnum):
    COUNTER = 0
    GAUGE = 1
    HISTOGRAM = 2


_KIND_NAMES = {
    MetricKind.COUNTER: "counter",
    MetricKind.GAUGE: "gauge",
    MetricKind.HISTOGRAM: "histogram",
}


class MetricFamily:
    """A custom metric family reported on the server's metrics endpoint."""

    COUNTER = MetricKind.COUNTER
    GAUGE = MetricKind.GAUGE
    HISTOGRAM = MetricKind.HISTOGRAM

    def __init__(self, name, description, kind):
        if name is None or description is None or kind is None:
            raise TypeError("MetricFamily needs name, description and kind")
        try:
            kind = MetricKind(kind)
        except ValueError:
            raise TritonModelException("unknown metric kind %r" % (kind,)) from None
        self._id = None
        self._name = str(name)
        self._kind = kind
        fid = next(_metric_ids)
        _server_call(
            "MetricFamily()",
            "mfam",
            {"f": fid, "name": self._name, "desc": str(description), "kind": _KIND_NAMES[kind]},
        )
        self._id = fid

    def Metric(self, labels=None, buckets=None):
        if labels is None:
            labels = {}
        if not isinstance(labels, dict):
            raise TritonModelException("metric labels must be a dict of str to str")
        for k, v in labels.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TritonModelException("metric labels must be a dict of str to str")
        if self._kind == MetricKind.HISTOGRAM:
            if buckets is None:
                raise TritonModelException(
                    "a histogram metric needs buckets (a list of upper bounds)"
                )
            buckets = [float(b) for b in buckets]
        elif buckets is not None:
            raise TritonModelException("only histogram metrics take buckets")
        return Metric(self, labels, buckets)

    def __del__(self):
        conn = _conn
        if conn is not None and getattr(self, "_id", None) is not None:
            try:
                conn.post_soon({"t": "call", "id": conn.next_id(), "op": "mdel", "a": {"f": self._id}})
            except Exception:
                pass


class Metric:
    """One labelled series of a MetricFamily."""

    def __init__(self, family, labels, buckets):
        self._id = None
        self._family = family  # keeps the family alive as long as its metrics
        mid = next(_metric_ids)
        _server_call(
            "Metric()",
            "metric",
            {"f": family._id, "m": mid, "labels": labels, "buckets": buckets},
        )
        self._id = mid

    def _post(self, op, value, allowed, verb):
        if self._family._kind not in allowed:
            raise TritonModelException(
                "%s is not supported by %s metrics"
                % (verb, _KIND_NAMES[self._family._kind])
            )
        value = float(value)
        if not math.isfinite(value):
            raise TritonModelException("metric values must be finite numbers, got %r" % value)
        conn = _conn
        if conn is None:
            raise TritonModelException("metrics need a running Nereid Python stub")
        conn.post({"t": "mop", "m": self._id, "op": op, "v": value})

    def increment(self, value):
        if self._family._kind == MetricKind.COUNTER and float(value) < 0:
            raise TritonModelException("a counter cannot be incremented by a negative value")
        self._post("inc", value, (MetricKind.COUNTER, MetricKind.GAUGE), "increment()")

    def set(self, value):
        self._post("set", value, (MetricKind.GAUGE,), "set()")

    def observe(self, value):
        self._post("obs", value, (MetricKind.HISTOGRAM,), "observe()")

    def value(self):
        return _server_call("Metric.value()", "mval", {"m": self._id})

    def __del__(self):
        conn = _conn
        if conn is not None and getattr(self, "_id", None) is not None:
            try:
                conn.post_soon({"t": "call", "id": conn.next_id(), "op": "mdel", "a": {"m": self._id}})
            except Exception:
                pass


# ---------------------------------------------------------------------------
# Logger.


class Logger:
    """Writes to the server's log, tagged with the caller's file and line."""

    class LogLevel(enum.IntEnum):
        INFO = 0
        WARNING = 1
        ERROR = 2
        VERBOSE = 3

    INFO = LogLevel.INFO
    WARNING = LogLevel.WARNING
    ERROR = LogLevel.ERROR
    VERBOSE = LogLevel.VERBOSE

    _WIRE = {0: "info", 1: "warn", 2: "error", 3: "verbose"}

    @staticmethod
    def _emit(level, message, depth):
        try:
            frame = sys._getframe(depth)
            filename, line = frame.f_code.co_filename, frame.f_lineno
        except ValueError:
            filename, line = "", 0
        lvl = Logger._WIRE.get(int(level), "info")
        conn = _conn
        if conn is None:
            sys.stderr.write("%s %s:%d] %s\n" % (lvl[0].upper(), filename, line, message))
            return
        conn.log(lvl, str(message), filename, line)

    @staticmethod
    def log(message, level=LogLevel.INFO):
        Logger._emit(level, message, 2)

    @staticmethod
    def log_info(message):
        Logger._emit(0, message, 2)

    @staticmethod
    def log_warn(message):
        Logger._emit(1, message, 2)

    @staticmethod
    def log_error(message):
        Logger._emit(2, message, 2)

    @staticmethod
    def log_verbose(message):
        Logger._emit(3, message, 2)
