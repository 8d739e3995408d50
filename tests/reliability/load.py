"""The soak's mixed load: client threads that each repeat one kind of
exchange with the server and check every answer.

Every kind raises on anything it did not expect, so the soak can count
unexpected errors (which must stay at zero) apart from the failures it
provokes on purpose (wrong shapes, unknown models), which are asserted to
come back with the status the server documents. Clients are thrown away and
made anew every few requests, so that connections are opened and closed all
through the run, not only at its start.
"""

from __future__ import annotations

import collections
import os
import queue
import random
import threading
import time
import uuid
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

# An answer that takes longer than this is a hang, not a slow machine.
CALL_TIMEOUT_S = 30
# Client objects (and their connections) live this many exchanges.
RECONNECT_EVERY = 50
# identity_fp32 element counts: from one float to 400 KB.
IDENTITY_SIZES = (1, 16, 256, 4096, 32768, 65536, 102400)
# Unexpected errors kept verbatim for the report.
MAX_EXAMPLES = 20


class Unexpected(AssertionError):
    """An answer the server should not have given."""


@dataclass
class Target:
    """Where the server listens."""

    http_url: str
    grpc_url: str


# --------------------------------------------------------------------------
# Counting


class Stats:
    """Counts shared by every worker thread."""

    def __init__(self):
        self._lock = threading.Lock()  # guards every field below
        self.exchanges = collections.Counter()  # completed exchanges by kind
        self.requests = collections.Counter()  # server calls by kind
        self.expected_errors = collections.Counter()  # provoked failures by label
        self.unexpected = collections.Counter()  # "kind: error" -> count
        self.examples: list[dict] = []
        self._started = time.monotonic()

    def ok(self, kind: str, requests: int, expected: list[str]):
        with self._lock:
            self.exchanges[kind] += 1
            self.requests[kind] += requests
            for label in expected:
                self.expected_errors[label] += 1

    def failed(self, kind: str, error: BaseException):
        text = f"{type(error).__name__}: {error}"[:300]
        with self._lock:
            self.unexpected[f"{kind}: {text}"] += 1
            if len(self.examples) < MAX_EXAMPLES:
                self.examples.append({"t_s": round(time.monotonic() - self._started, 1), "kind": kind, "error": text})

    def total_requests(self) -> int:
        with self._lock:
            return sum(self.requests.values())

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "exchanges": dict(self.exchanges),
                "requests": dict(self.requests),
                "requests_total": sum(self.requests.values()),
                "expected_errors": dict(self.expected_errors),
                "unexpected_errors_total": sum(self.unexpected.values()),
                "unexpected_errors": dict(self.unexpected),
                "unexpected_examples": list(self.examples),
            }


# --------------------------------------------------------------------------
# Kinds of exchange
#
# Each kind holds its own client(s); `exchange()` does one round and returns
# (server calls made, labels of the provoked failures it saw).


def deadline(protocol: str) -> dict:
    """Call options that bound a gRPC call (the HTTP client is bounded by
    its network timeout), so that a hung server shows as an error, not as
    a client thread that never returns."""
    return {"client_timeout": CALL_TIMEOUT_S} if protocol == "grpc" else {}


def expect(condition: bool, what: str):
    if not condition:
        raise Unexpected(what)


def expect_equal(got, want, what: str):
    expect(got is not None, f"{what}: missing")
    expect(got.shape == want.shape and got.tobytes() == want.tobytes(), f"{what}: wrong values")


def simple_inputs(module, a: np.ndarray, b: np.ndarray, binary: bool = True):
    inputs = [module.InferInput("INPUT0", list(a.shape), "INT32"), module.InferInput("INPUT1", list(b.shape), "INT32")]
    if module is httpclient:
        inputs[0].set_data_from_numpy(a, binary_data=binary)
        inputs[1].set_data_from_numpy(b, binary_data=binary)
    else:
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(b)
    return inputs


class Kind:
    """One kind of exchange, run over and over by one thread."""

    name = "kind"

    def __init__(self, target: Target, rng: random.Random):
        self.target = target
        self.rng = rng
        self._clients: list = []

    def new_clients(self):
        """Drops the clients (closing their connections) and makes new ones."""
        self.close()
        self.connect()

    def connect(self):
        pass

    def http(self):
        c = httpclient.InferenceServerClient(self.target.http_url, network_timeout=CALL_TIMEOUT_S)
        self._clients.append(c)
        return c

    def grpc(self):
        c = grpcclient.InferenceServerClient(self.target.grpc_url)
        self._clients.append(c)
        return c

    def exchange(self) -> tuple[int, list[str]]:
        raise NotImplementedError

    def close(self):
        for c in self._clients:
            try:
                c.close()
            except Exception:  # noqa: BLE001 - a broken client is dropped anyway
                pass
        self._clients = []


class SimpleKind(Kind):
    """`simple`: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1."""

    def __init__(self, target, rng, protocol: str):
        super().__init__(target, rng)
        self.protocol = protocol
        self.name = f"{protocol}_simple"

    def connect(self):
        self.client = self.http() if self.protocol == "http" else self.grpc()

    def exchange(self):
        module = httpclient if self.protocol == "http" else grpcclient
        a = np.array([[self.rng.randint(-1000, 1000) for _ in range(16)]], dtype=np.int32)
        b = np.array([[self.rng.randint(-1000, 1000) for _ in range(16)]], dtype=np.int32)
        # Over HTTP, alternate JSON and binary tensors.
        binary = self.rng.random() < 0.5
        r = self.client.infer("simple", simple_inputs(module, a, b, binary), **deadline(self.protocol))
        expect_equal(r.as_numpy("OUTPUT0"), a + b, "simple OUTPUT0")
        expect_equal(r.as_numpy("OUTPUT1"), a - b, "simple OUTPUT1")
        return 1, []


class IdentityKind(Kind):
    """`identity_fp32` (ONNX Identity) on FP32 [1, N], N up to 100 K floats."""

    def __init__(self, target, rng, protocol: str):
        super().__init__(target, rng)
        self.protocol = protocol
        self.name = f"{protocol}_identity"

    def connect(self):
        self.client = self.http() if self.protocol == "http" else self.grpc()

    def exchange(self):
        n = self.rng.choice(IDENTITY_SIZES)
        data = np.random.default_rng(self.rng.getrandbits(32)).standard_normal((1, n)).astype(np.float32)
        if self.protocol == "http":
            inp = httpclient.InferInput("INPUT0", [1, n], "FP32")
            inp.set_data_from_numpy(data, binary_data=True)
            out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=True)
        else:
            inp = grpcclient.InferInput("INPUT0", [1, n], "FP32")
            inp.set_data_from_numpy(data)
            out = grpcclient.InferRequestedOutput("OUTPUT0")
        r = self.client.infer("identity_fp32", [inp], outputs=[out], **deadline(self.protocol))
        expect_equal(r.as_numpy("OUTPUT0"), data, f"identity_fp32 [1,{n}]")
        return 1, []


class StreamKind(Kind):
    """`repeat_int32` over one gRPC stream: k responses, then the final flag.

    The empty final response is asked for, so an exchange is complete only
    when the server says so: a lost or extra response shows up as an error.
    """

    name = "grpc_stream"

    def connect(self):
        self.client = self.grpc()
        self.answers: queue.Queue = queue.Queue()
        self.client.start_stream(callback=lambda result, error: self.answers.put((result, error)))
        self.count = 0

    def close(self):
        client = getattr(self, "client", None)
        if client is not None:
            try:
                client.stop_stream()
            except Exception:  # noqa: BLE001
                pass
        super().close()

    def exchange(self):
        self.count += 1
        rid = f"r{self.count}"
        k = self.rng.randint(1, 8)
        values = np.array([self.rng.randint(-(2**31), 2**31 - 1) for _ in range(k)], dtype=np.int32)
        inputs = [
            grpcclient.InferInput("IN", [k], "INT32"),
            grpcclient.InferInput("DELAY", [k], "UINT32"),
            grpcclient.InferInput("WAIT", [1], "UINT32"),
        ]
        inputs[0].set_data_from_numpy(values)
        inputs[1].set_data_from_numpy(np.array([self.rng.randint(0, 2) for _ in range(k)], dtype=np.uint32))
        inputs[2].set_data_from_numpy(np.array([0], dtype=np.uint32))
        self.client.async_stream_infer("repeat_int32", inputs, request_id=rid, enable_empty_final_response=True)
        for i in range(k + 1):
            try:
                result, error = self.answers.get(timeout=CALL_TIMEOUT_S)
            except queue.Empty:
                raise Unexpected(f"repeat_int32: response {i} of {k} not within {CALL_TIMEOUT_S} s") from None
            expect(error is None, f"repeat_int32 stream error: {error}")
            resp = result.get_response()
            expect(resp.id == rid, f"repeat_int32: response for {resp.id!r}, want {rid!r}")
            final = resp.parameters["triton_final_response"].bool_param
            if i < k:
                expect(not final, f"repeat_int32: final flag after {i} of {k} responses")
                out, idx = result.as_numpy("OUT"), result.as_numpy("IDX")
                expect(out is not None and int(out[0]) == int(values[i]), f"repeat_int32: OUT {i} wrong")
                expect(idx is not None and int(idx[0]) == i, f"repeat_int32: IDX {i} wrong")
            else:
                expect(final and len(resp.outputs) == 0, "repeat_int32: no empty final response")
        return 1, []


class ErrorKind(Kind):
    """Requests that must fail, each with the status the server documents."""

    name = "errors"

    # (label, protocol, model, columns, expected status as tritonclient reports it)
    CASES = (
        ("http wrong shape -> 400", "http", "simple", 15, "400"),
        ("http unknown model -> 404", "http", "no_such_model", 16, "404"),
        ("grpc wrong shape -> INVALID_ARGUMENT", "grpc", "simple", 15, "StatusCode.INVALID_ARGUMENT"),
        ("grpc unknown model -> NOT_FOUND", "grpc", "no_such_model", 16, "StatusCode.NOT_FOUND"),
    )

    def connect(self):
        self.clients = {"http": self.http(), "grpc": self.grpc()}

    def exchange(self):
        label, protocol, model, columns, want = self.rng.choice(self.CASES)
        module = httpclient if protocol == "http" else grpcclient
        a = np.zeros((1, columns), dtype=np.int32)
        try:
            self.clients[protocol].infer(model, simple_inputs(module, a, a), **deadline(protocol))
        except InferenceServerException as e:
            expect(e.status() == want, f"{label}: got {e.status()}: {e.message()}")
            return 1, [label]
        raise Unexpected(f"{label}: the request succeeded")


class SharedMemoryKind(Kind):
    """A system shared-memory cycle on `simple`: create two /dev/shm objects,
    register them, infer with inputs and outputs in them, check, unregister,
    destroy. Five server calls; the protocol alternates."""

    name = "shm_cycle"

    def connect(self):
        self.clients = {"http": self.http(), "grpc": self.grpc()}
        self.count = 0

    def exchange(self):
        self.count += 1
        protocol = "http" if self.count % 2 else "grpc"
        client = self.clients[protocol]
        module = httpclient if protocol == "http" else grpcclient
        tag = f"{os.getpid()}_{threading.get_ident()}_{uuid.uuid4().hex[:8]}"
        a = np.array([[self.rng.randint(-1000, 1000) for _ in range(16)]], dtype=np.int32)
        b = np.array([[self.rng.randint(-1000, 1000) for _ in range(16)]], dtype=np.int32)
        handles, registered = [], []
        try:
            ins = shm.create_shared_memory_region(f"in_{tag}", f"/nereid_rel_in_{tag}", 128, create_only=True)
            handles.append(ins)
            outs = shm.create_shared_memory_region(f"out_{tag}", f"/nereid_rel_out_{tag}", 128, create_only=True)
            handles.append(outs)
            shm.set_shared_memory_region(ins, [a, b])
            for name, key in ((f"in_{tag}", f"/nereid_rel_in_{tag}"), (f"out_{tag}", f"/nereid_rel_out_{tag}")):
                client.register_system_shared_memory(name, key, 128, **deadline(protocol))
                registered.append(name)
            inputs = [module.InferInput("INPUT0", [1, 16], "INT32"), module.InferInput("INPUT1", [1, 16], "INT32")]
            inputs[0].set_shared_memory(f"in_{tag}", 64)
            inputs[1].set_shared_memory(f"in_{tag}", 64, offset=64)
            outputs = []
            for i, name in enumerate(("OUTPUT0", "OUTPUT1")):
                out = module.InferRequestedOutput(name, binary_data=True) if protocol == "http" else module.InferRequestedOutput(name)
                out.set_shared_memory(f"out_{tag}", 64, offset=64 * i)
                outputs.append(out)
            client.infer("simple", inputs, outputs=outputs, **deadline(protocol))
            expect_equal(shm.get_contents_as_numpy(outs, np.int32, [1, 16]), a + b, "shm OUTPUT0")
            expect_equal(shm.get_contents_as_numpy(outs, np.int32, [1, 16], offset=64), a - b, "shm OUTPUT1")
            while registered:
                client.unregister_system_shared_memory(registered.pop(), **deadline(protocol))
        finally:
            for name in registered:  # after a failure: leave nothing behind
                try:
                    client.unregister_system_shared_memory(name, **deadline(protocol))
                except Exception:  # noqa: BLE001
                    pass
            for h in handles:
                shm.destroy_shared_memory_region(h)
        return 5, []


class ChurnKind(Kind):
    """A new client for every exchange: connection set-up and tear-down
    under load, with a health and a metadata call on each."""

    name = "connection_churn"

    def exchange(self):
        protocol = "http" if self.rng.random() < 0.5 else "grpc"
        client = self.http() if protocol == "http" else self.grpc()
        try:
            expect(client.is_server_ready(**deadline(protocol)), "server not ready")
            meta = client.get_model_metadata("simple", **deadline(protocol))
            name = meta["name"] if isinstance(meta, dict) else meta.name
            expect(name == "simple", f"metadata of {name!r}")
        finally:
            self.close()
        return 2, []


def kinds(target: Target, seed: int, threads_per_kind: int = 1) -> list[Kind]:
    """The mix of the soak: one thread per kind (times threads_per_kind)."""
    rng = random.Random(seed)
    made = []
    for _ in range(threads_per_kind):
        for make in (
            lambda r: SimpleKind(target, r, "http"),
            lambda r: SimpleKind(target, r, "grpc"),
            lambda r: IdentityKind(target, r, "http"),
            lambda r: IdentityKind(target, r, "grpc"),
            lambda r: StreamKind(target, r),
            lambda r: ErrorKind(target, r),
            lambda r: SharedMemoryKind(target, r),
            lambda r: ChurnKind(target, r),
        ):
            made.append(make(random.Random(rng.getrandbits(64))))
    return made


# --------------------------------------------------------------------------
# Running


class Load:
    """Runs every kind on its own thread until stopped."""

    def __init__(self, kinds_: list[Kind], stats: Stats):
        self.kinds = kinds_
        self.stats = stats
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(k,), name=k.name, daemon=True) for k in kinds_]

    def start(self):
        for t in self._threads:
            t.start()

    def stop(self, timeout_s: float = 60) -> list[str]:
        """Stops the threads; returns the names of any still stuck after timeout_s."""
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(timeout=max(0.1, deadline - time.monotonic()))
        return [t.name for t in self._threads if t.is_alive()]

    def _loop(self, kind: Kind):
        done = 0
        try:
            while not self._stop.is_set():
                try:
                    if done % RECONNECT_EVERY == 0:
                        kind.new_clients()
                    done += 1
                    requests, expected = kind.exchange()
                    self.stats.ok(kind.name, requests, expected)
                except Exception as e:  # noqa: BLE001 - counted, then a fresh client
                    self.stats.failed(kind.name, e)
                    done = 0
                    time.sleep(0.1)
        finally:
            kind.close()


def warm_up(kinds_: list[Kind], rounds: int = 3) -> list[str]:
    """Each kind a few times before the baseline, so that lazily made
    server state (pools, ONNX sessions' first runs) is not counted as growth.
    Returns the errors seen, which fail the soak."""
    errors = []
    for kind in kinds_:
        try:
            kind.new_clients()
            for _ in range(rounds):
                kind.exchange()
        except Exception as e:  # noqa: BLE001
            errors.append(f"{kind.name}: {type(e).__name__}: {e}"[:300])
        finally:
            kind.close()
    return errors
