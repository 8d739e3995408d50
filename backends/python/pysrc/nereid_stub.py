"""Nereid's Python stub: runs one Triton ``model.py`` for one model instance.

The Nereid server (the parent) starts this program with one end of a Unix
stream socket as file descriptor 3 and drives it with the frames that
``backends/python/PROTOCOL.md`` describes: 4-byte little-endian length,
then one JSON object. Tensor bytes live in sealed memfd segments; each side
writes into segments it owns and tells the owner when it is done reading
one of the other side's chunks.

Threads:
  * the reader thread reads every frame. It answers ``ping`` itself, maps
    and unmaps segments, applies frees, and routes ``iresp`` / ``reply``
    frames to the calls waiting for them, so those work whatever the model
    is doing. ``init``, ``exec``, ``ready`` and ``fin`` go to the main
    thread through a queue.
  * the main thread runs the model: initialize, execute, is_ready, finalize.
  * an asyncio event loop thread, started the first time a coroutine has to
    run (``async def execute`` and friends), lives as long as the stub, so
    a model's loop-bound objects stay usable from one call to the next.

Writes to the socket are serialized by one lock, one ``sendall`` per frame.
"""

import array
import asyncio
import collections
import fcntl
import importlib.machinery
import importlib.util
import itertools
import mmap
import os
import queue
import signal
import socket
import sys
import threading
import types
import weakref

import numpy as np

import triton_python_backend_utils as pb_utils

_PROTO_TO_NP = pb_utils._PROTO_TO_NP
_Tensor_wrap = pb_utils.Tensor._wrap

_MAX_FRAME = 64 << 20
_ALIGN = 64
_PAGE = 4096
_FREE_FLUSH = 256  # queued frees past this go in a frame of their own
_TRACE_FRAMES = 10  # frames of a model traceback that an error keeps

_HERE = os.path.abspath(__file__)
_PB_UTILS_FILE = os.path.abspath(pb_utils.__file__)


def _make_codec():
    """JSON encode / decode for frames. The C encoder and scanner are called
    directly: json.dumps / json.loads add several microseconds per call in
    argument checks and encoding detection, which is most of a small frame."""
    import json.encoder
    import json.scanner

    c_enc = getattr(json.encoder, "c_make_encoder", None)
    if c_enc is not None:
        enc = c_enc(
            None,  # no circular-reference check: frames are trees
            json.JSONEncoder().default,
            json.encoder.encode_basestring_ascii,
            None,
            ":",
            ",",
            False,
            False,
            False,  # no NaN / Infinity: the parent's JSON has no such numbers
        )

        def dumps(obj):
            return "".join(enc(obj, 0))

    else:
        dumps = json.JSONEncoder(separators=(",", ":")).encode
    scan = json.JSONDecoder().scan_once

    def loads(data):
        text = str(data, "utf-8")
        if text[:1] == "{":
            try:
                obj, end = scan(text, 0)
            except StopIteration:
                raise ValueError("not a JSON value") from None
            if end == len(text) or not text[end:].strip():
                return obj
        return json.loads(text)

    return dumps, loads


_dumps, _loads = _make_codec()


def _die(why, code=2):
    """End the stub at once: the parent is gone or spoke nonsense."""
    try:
        if why:
            sys.stderr.write("nereid stub: %s\n" % why)
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


class _StubError(Exception):
    """An error whose message is complete as it is (no type, no traceback)."""


def _describe(exc):
    """Text of an exception raised by model code, in the form Triton gives:
    ``Type: message``, then the model's frames, innermost first."""
    if isinstance(exc, _StubError):
        return str(exc)
    head = "%s: %s" % (type(exc).__name__, exc)
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        fn = code.co_filename
        if fn != _HERE and fn != _PB_UTILS_FILE and not fn.startswith("<frozen"):
            frames.append("  %s(%d): %s\n" % (fn, tb.tb_lineno, code.co_name))
        tb = tb.tb_next
    if not frames:
        return head
    frames.reverse()
    return head + "\n\nAt:\n" + "".join(frames[:_TRACE_FRAMES])


def _env_bytes(name, default=1 << 20):
    try:
        return int(os.environ.get(name) or default)
    except ValueError:
        sys.stderr.write("nereid stub: ignoring %s=%r (not a byte count)\n" % (name, os.environ[name]))
        return default


def _wire_error(text, code="INTERNAL"):
    return {"code": code, "msg": text}


# ---------------------------------------------------------------------------
# Shared memory.


class _Segment:
    """One of the stub's memfd segments, with a first-fit free list."""

    __slots__ = ("id", "size", "mm", "free", "used")

    def __init__(self, sid, size, mm):
        self.id = sid
        self.size = size
        self.mm = mm
        self.free = [[0, size]]  # [offset, size], sorted by offset, coalesced
        self.used = {}  # offset -> size

    def take(self, need):
        free = self.free
        for i, run in enumerate(free):
            if run[1] >= need:
                off = run[0]
                if run[1] == need:
                    del free[i]
                else:
                    run[0] += need
                    run[1] -= need
                self.used[off] = need
                return off
        return None

    def give(self, off):
        size = self.used.pop(off, None)
        if size is None:
            return False
        free = self.free
        lo, hi = 0, len(free)
        while lo < hi:
            mid = (lo + hi) // 2
            if free[mid][0] < off:
                lo = mid + 1
            else:
                hi = mid
        i = lo
        if i > 0 and free[i - 1][0] + free[i - 1][1] == off:
            free[i - 1][1] += size
            if i < len(free) and off + size == free[i][0]:
                free[i - 1][1] += free[i][1]
                del free[i]
        elif i < len(free) and off + size == free[i][0]:
            free[i][0] = off
            free[i][1] += size
        else:
            free.insert(i, [off, size])
        return True

    def idle(self):
        return not self.used


class _Arena:
    """The stub's segments: execute outputs and BLS inputs are written here."""

    def __init__(self, conn, first_size, growth):
        self.conn = conn
        self.first_size = first_size
        self.growth = growth
        self.lock = threading.Lock()
        self.segs = []  # creation order; segs[0] is the first segment
        self.by_id = {}
        self.next_id = 0

    def alloc(self, n):
        """A chunk of at least n bytes: (segment, offset)."""
        need = (n + _ALIGN - 1) & ~(_ALIGN - 1)
        with self.lock:
            for seg in self.segs:
                off = seg.take(need)
                if off is not None:
                    return seg, off
            page = (need + _PAGE - 1) & ~(_PAGE - 1)
            base = self.first_size if not self.segs else self.growth
            seg = self._create(max(base, page))
            return seg, seg.take(need)

    def _create(self, size):
        # Called with self.lock held, so no other thread can use the new
        # segment before its seg frame is on the socket.
        sid = self.next_id
        self.next_id += 1
        fd = os.memfd_create("nereid-stub-%d" % sid, os.MFD_ALLOW_SEALING | os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
            mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
            self.conn.send({"t": "seg", "s": sid, "z": size}, fd=fd)
        finally:
            os.close(fd)
        seg = _Segment(sid, size, mm)
        self.segs.append(seg)
        self.by_id[sid] = seg
        return seg

    def release(self, pairs):
        """Give back chunks the parent no longer reads ([segment, offset] pairs)."""
        victims = []
        with self.lock:
            for pair in pairs:
                seg = self.by_id.get(pair[0])
                if seg is None or not seg.give(pair[1]):
                    sys.stderr.write("nereid stub: parent freed unknown chunk %r\n" % (pair,))
                    continue
                if seg.used or seg is self.segs[0]:
                    continue
                # A non-first segment is idle: keep one such spare, the larger.
                for other in self.segs[1:]:
                    if other is not seg and other.idle():
                        victim = seg if seg.size <= other.size else other
                        self.segs.remove(victim)
                        del self.by_id[victim.id]
                        victims.append(victim)
                        break
        for victim in victims:
            self.conn.send({"t": "drop", "s": victim.id})
            try:
                victim.mm.close()
            except BufferError:
                pass


def _rollback(arena, chunks):
    if not chunks:
        return
    with arena.lock:
        for seg, off in chunks:
            seg.give(off)


# ---------------------------------------------------------------------------
# BLS calls.


class _BlsCall:
    """One BLS request in flight: where its iresp frames go."""

    __slots__ = ("c", "queue", "decoupled", "future", "loop", "abandoned", "first", "result")

    def __init__(self, c, decoupled):
        self.c = c
        self.queue = queue.SimpleQueue()
        self.decoupled = decoupled
        self.future = None
        self.loop = None
        self.abandoned = False
        self.first = True
        self.result = None


def _resolve(fut, value):
    if not fut.done():
        fut.set_result(value)


# ---------------------------------------------------------------------------
# The connection to the parent.


class _Conn:
    """The socket, the arenas, and everything the reader thread handles.

    pb_utils reaches the server through the methods below (its ``_conn``)."""

    def __init__(self, sock):
        self.sock = sock
        self.wlock = threading.Lock()
        self.main_q = queue.SimpleQueue()
        self.frees = collections.deque()  # [segment, offset] of parent chunks
        self.deferred = collections.deque()  # frames queued by finalizers
        self.fds = collections.deque()
        self.psegs = {}  # parent segment id -> mmap
        first = _env_bytes("NEREID_STUB_SHM_DEFAULT")
        growth = _env_bytes("NEREID_STUB_SHM_GROWTH")
        self.arena = _Arena(self, max(first, _PAGE), max(growth, _PAGE))
        self.ids = itertools.count(1)
        self.calls = {}  # call id -> SimpleQueue for its reply
        self.bls_calls = {}  # BLS call id -> _BlsCall
        self.reader_ident = None
        # Input views: id(weakref to a base array) -> (weakref, its parent
        # chunk). The weakref callback (what weakref.finalize is built on,
        # minus its bookkeeping) queues the free once numpy drops the array,
        # on whatever thread. Keyed by id: arrays, hence their weakrefs, are
        # unhashable; the weakref lives in the dict, so its id is unique.
        self.views = {}
        # True while execute runs (main_ident is the thread that runs it).
        self.exec_active = False
        self.main_ident = threading.get_ident()
        # Set by the stub from init.
        self.decoupled = False
        self.calls_allowed = False
        self.model_name = ""
        self.model_version = -1
        self.model_dir = ""

    # -- writing ------------------------------------------------------------

    def send(self, obj, fd=None):
        """Write one frame; queued frees ride along in its "fr"."""
        with self.wlock:
            self._send_locked(obj, fd)

    def _send_locked(self, obj, fd=None):
        deferred = self.deferred
        while deferred:
            try:
                extra = deferred.popleft()
            except IndexError:
                break
            self._write(extra, None)
        frees = self.frees
        if frees:
            fr = []
            while True:
                try:
                    fr.append(frees.popleft())
                except IndexError:
                    break
            if fr:
                obj["fr"] = fr
        self._write(obj, fd)

    def _write(self, obj, fd):
        data = _dumps(obj).encode("ascii")
        frame = len(data).to_bytes(4, "little") + data
        if fd is None:
            self.sock.sendall(frame)
            return
        sent = self.sock.sendmsg([frame], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
        if sent < len(frame):
            self.sock.sendall(frame[sent:])

    def post(self, obj):
        self.send(obj)

    def post_soon(self, obj):
        """Send a frame from a finalizer: never block on the write lock (the
        finalizer may run on a thread that holds it)."""
        self.deferred.append(obj)
        self._try_flush()

    def _try_flush(self):
        if self.wlock.acquire(False):
            try:
                if self.frees or self.deferred:
                    self._send_locked({"t": "free"})
            except OSError:
                pass
            finally:
                self.wlock.release()

    def flush_frees(self):
        if self.frees or self.deferred:
            self.send({"t": "free"})

    def next_id(self):
        return next(self.ids)

    def _input_gone(self, ref):
        # A weakref callback: it may run on any thread, even inside send().
        entry = self.views.pop(id(ref), None)
        if entry is None:
            return
        self.frees.append(entry[1])
        if len(self.frees) > _FREE_FLUSH:
            self._try_flush()

    # -- reading ------------------------------------------------------------

    def start_reader(self):
        t = threading.Thread(target=self._reader, name="nereid-stub-reader", daemon=True)
        t.start()

    def _reader(self):
        self.reader_ident = threading.get_ident()
        try:
            self._read_loop()
        except SystemExit:
            raise
        except BaseException as e:  # a bug here would leave the parent waiting
            _die("reader failed: %s" % _describe(e))

    def _read_loop(self):
        # One buffer for the life of the stub, read into in place: a fresh
        # bytes object per recvmsg costs an mmap, an mremap and a munmap
        # per frame (its size is past malloc's mmap threshold).
        sock = self.sock
        ancsize = socket.CMSG_SPACE(64 * array.array("i").itemsize)
        buf = bytearray(1 << 18)
        mv = memoryview(buf)
        start = end = 0  # buf[start:end] holds bytes not parsed yet
        while True:
            if end == len(buf):
                # Full: move the partial frame to the front, or grow to hold it.
                need = len(buf)
                if end - start >= 4:
                    need = max(need, 4 + int.from_bytes(buf[start : start + 4], "little"))
                if start > 0 and need <= len(buf):
                    buf[: end - start] = buf[start:end]
                else:
                    grown = bytearray(max(need, 2 * len(buf)) if need > len(buf) else 2 * len(buf))
                    grown[: end - start] = buf[start:end]
                    mv.release()
                    buf = grown
                    mv = memoryview(buf)
                end -= start
                start = 0
            try:
                n_read, anc, flags, _ = sock.recvmsg_into([mv[end:]], ancsize)
            except InterruptedError:
                continue
            except OSError as e:
                _die("socket error: %s" % e, 1)
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(cdata[: len(cdata) - len(cdata) % fds.itemsize])
                    self.fds.extend(fds)
            if flags & socket.MSG_CTRUNC:
                _die("protocol error: file descriptors were cut off")
            if not n_read:
                _die(None, 0)  # the parent is gone
            end += n_read
            while end - start >= 4:
                n = int.from_bytes(buf[start : start + 4], "little")
                if n < 1 or n > _MAX_FRAME:
                    _die("protocol error: bad frame length %d" % n)
                if end - start - 4 < n:
                    break
                try:
                    msg = _loads(mv[start + 4 : start + 4 + n])
                except ValueError as e:
                    _die("protocol error: bad JSON: %s" % e)
                start += 4 + n
                if type(msg) is not dict:
                    _die("protocol error: a frame is not a JSON object")
                self._dispatch(msg)
            if start == end:
                start = end = 0

    def _dispatch(self, msg):
        fr = msg.get("fr")
        if fr:
            self.arena.release(fr)
        t = msg.get("t")
        if t == "exec" or t == "ready" or t == "init" or t == "fin":
            self.main_q.put(msg)
        elif t == "iresp":
            self._on_iresp(msg)
        elif t == "reply":
            box = self.calls.pop(msg.get("id"), None)
            if box is not None:
                box.put(msg)
        elif t == "ping":
            self.send({"t": "pong", "id": msg.get("id")})
        elif t == "seg":
            self._map_segment(msg)
        elif t == "drop":
            mm = self.psegs.pop(msg.get("s"), None)
            if mm is not None:
                try:
                    mm.close()
                except BufferError:
                    pass  # a view still exists; the mapping goes with it
        elif t == "free":
            pass
        else:
            _die("protocol error: unknown frame type %r" % (t,))

    def _map_segment(self, msg):
        if not self.fds:
            _die("protocol error: seg frame without a file descriptor")
        fd = self.fds.popleft()
        try:
            sid = msg["s"]
            size = int(msg["z"])
            seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
            if not seals & fcntl.F_SEAL_SHRINK:
                _die("protocol error: segment %r is not sealed against shrinking" % (sid,))
            if os.fstat(fd).st_size < size or size <= 0:
                _die("protocol error: segment %r is smaller than %d bytes" % (sid, size))
            self.psegs[sid] = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        except (KeyError, TypeError, ValueError, OSError) as e:
            _die("protocol error: bad seg frame: %s" % e)
        finally:
            os.close(fd)

    # -- tensors ------------------------------------------------------------

    def tensor_from_desc(self, d):
        """A pb_utils.Tensor over a parent chunk (a view; BYTES are copied)."""
        name = d["n"]
        dt = d["dt"]
        shape = d["sh"]
        length = d["l"]
        npdt = _PROTO_TO_NP.get(dt)
        if npdt is None:
            raise _StubError("tensor '%s' has unknown datatype %r" % (name, dt))
        if not length:
            if dt == "BYTES":
                arr = np.empty(shape, dtype=np.object_)
                if arr.size:
                    raise _StubError("BYTES tensor '%s' of shape %s holds no data" % (name, shape))
            else:
                arr = np.zeros(shape, dtype=npdt)
                if arr.size:
                    raise _StubError("tensor '%s' of shape %s holds no data" % (name, shape))
            return _Tensor_wrap(name, arr, dt)
        sid = d["s"]
        off = d["o"]
        mm = self.psegs.get(sid)
        if mm is None:
            raise _StubError("tensor '%s' names unknown segment %r" % (name, sid))
        if off < 0 or off + length > len(mm):
            self.frees.append([sid, off])
            raise _StubError("tensor '%s' runs past the end of segment %r" % (name, sid))
        if dt == "BYTES":
            blob = mm[off : off + length]
            self.frees.append([sid, off])  # copied out: give it back now
            try:
                items = pb_utils._deserialize_bytes(blob)
            except ValueError as e:
                raise _StubError("BYTES tensor '%s': %s" % (name, e)) from None
            arr = pb_utils._object_array(items)
            count = 1
            for s in shape:
                count *= s
            if count != len(items):
                raise _StubError(
                    "BYTES tensor '%s' holds %d elements, but its shape %s needs %d"
                    % (name, len(items), shape, count)
                )
            if len(shape) != 1:
                arr = arr.reshape(shape)
            return _Tensor_wrap(name, arr, dt)
        count = length // npdt.itemsize
        base = np.frombuffer(mm, npdt, count, off)
        ref = weakref.ref(base, self._input_gone)
        self.views[id(ref)] = (ref, [sid, off])
        want = 1
        for s in shape:
            want *= s
        if want != count or length % npdt.itemsize:
            raise _StubError(
                "tensor '%s' holds %d bytes, which does not fit %s %s" % (name, length, dt, shape)
            )
        arr = base if (len(shape) == 1) else base.reshape(shape)
        return _Tensor_wrap(name, arr, dt)

    def encode_tensor(self, t, chunks):
        """Copy a tensor into a stub chunk; returns its descriptor. The chunk
        is appended to `chunks`, so a failure later can give it back."""
        arr = t._arr
        dt = t._dt
        if dt == "BYTES":
            blob = pb_utils._serialize_elements(arr) if arr.size else b""
            n = len(blob)
            if not n:
                return {"n": t._name, "dt": dt, "sh": list(arr.shape), "s": 0, "o": 0, "l": 0}
            seg, off = self.arena.alloc(n)
            chunks.append((seg, off))
            seg.mm[off : off + n] = blob
        else:
            n = arr.nbytes
            if not n:
                return {"n": t._name, "dt": dt, "sh": list(arr.shape), "s": 0, "o": 0, "l": 0}
            seg, off = self.arena.alloc(n)
            chunks.append((seg, off))
            try:
                seg.mm[off : off + n] = arr
            except (BufferError, TypeError, ValueError):
                np.ndarray(arr.shape, arr.dtype, buffer=seg.mm, offset=off)[...] = arr
        return {"n": t._name, "dt": dt, "sh": list(arr.shape), "s": seg.id, "o": off, "l": n}

    def response_body(self, resp, wanted, body, chunks):
        """Fill out/p/error of a response object from a pb_utils response."""
        if resp._error is not None:
            body["out"] = []
            body["error"] = pb_utils._error_to_wire(resp._error)
        else:
            out = []
            for t in resp._tensors:
                if wanted and t._name not in wanted:
                    continue
                out.append(self.encode_tensor(t, chunks))
            body["out"] = out
        body["p"] = resp._params
        return body

    def response_from_wire(self, msg):
        """A pb_utils.InferenceResponse for a response object of the parent."""
        tensors = []
        err = msg.get("error")
        try:
            for d in msg.get("out") or ():
                tensors.append(self.tensor_from_desc(d))
        except (_StubError, KeyError, TypeError, ValueError) as e:
            tensors = []
            if err is None:
                err = _wire_error("bad response from the server: %s" % e)
        error = pb_utils._error_from_wire(err) if err else None
        return pb_utils.InferenceResponse._wrap(tensors, error, msg.get("p") or {})

    # -- decoupled responses (pb_utils.InferenceResponseSender) -------------

    def send_response(self, r, wanted, response, final):
        body = {"t": "resp", "r": r, "has": response is not None, "final": final}
        chunks = []
        if response is None:
            body["out"] = []
            body["p"] = {}
        else:
            try:
                self.response_body(response, wanted, body, chunks)
            except Exception:
                _rollback(self.arena, chunks)
                raise
        self.send(body)

    # -- server calls --------------------------------------------------------

    def call(self, op, args):
        if threading.get_ident() == self.reader_ident:
            raise pb_utils.TritonModelException("server calls cannot be made from the stub's reader thread")
        cid = next(self.ids)
        box = queue.SimpleQueue()
        self.calls[cid] = box
        try:
            self.send({"t": "call", "id": cid, "op": op, "a": args})
        except BaseException:
            self.calls.pop(cid, None)
            raise
        reply = box.get()
        err = reply.get("error")
        if err:
            raise pb_utils.TritonModelException(err.get("msg", "the server call failed"))
        return reply.get("v")

    def log(self, lvl, msg, filename, line):
        self.send({"t": "log", "lvl": lvl, "msg": msg, "file": filename, "line": line})

    # -- BLS -----------------------------------------------------------------

    def _start_bls(self, req, call):
        chunks = []
        try:
            ins = [self.encode_tensor(t, chunks) for t in req._inputs]
        except Exception:
            _rollback(self.arena, chunks)
            raise
        ver = "" if req._version is None or req._version < 0 else str(req._version)
        self.bls_calls[call.c] = call
        try:
            self.send(
                {
                    "t": "infer",
                    "c": call.c,
                    "model": req.model_name,
                    "ver": ver,
                    "id": req._rid,
                    "cid": req._cid,
                    "fl": req._flags,
                    "to": req._timeout,
                    "p": req._params,
                    "out": req._out,
                    "in": ins,
                    "dec": call.decoupled,
                    # Made by the running execute (for a decoupled model: on
                    # its own thread): the parent cancels the call with the
                    # batch.
                    "par": self.exec_active
                    and (not self.decoupled or threading.get_ident() == self.main_ident),
                    "tr": getattr(req._trace, "_r", 0) or 0,
                }
            )
        except BaseException:
            self.bls_calls.pop(call.c, None)
            _rollback(self.arena, chunks)
            raise

    def bls(self, req, decoupled):
        if threading.get_ident() == self.reader_ident:
            raise pb_utils.TritonModelException("BLS requests cannot be made from the stub's reader thread")
        call = _BlsCall(next(self.ids), decoupled)
        self._start_bls(req, call)
        if decoupled:
            return pb_utils.ResponseIterator(self, call)
        return self._collect(call)

    def _collect(self, call):
        """The single response of a BLS request that is not decoupled (the
        reader thread queues it once the final iresp is in)."""
        return call.queue.get()[0]

    def bls_async(self, req, decoupled):
        loop = asyncio.get_running_loop()
        call = _BlsCall(next(self.ids), decoupled)
        call.loop = loop
        call.future = loop.create_future()
        self._start_bls(req, call)
        return call.future

    def _on_iresp(self, msg):
        c = msg.get("c")
        final = bool(msg.get("final"))
        call = self.bls_calls.get(c)
        if final:
            self.bls_calls.pop(c, None)
        real = bool(msg.get("has") or msg.get("error"))
        if real:
            resp = self.response_from_wire(msg)
        else:
            resp = pb_utils.InferenceResponse._wrap([], None, msg.get("p") or {})
        if call is None or call.abandoned:
            return  # dropping resp gives its chunks back
        if call.decoupled:
            # Every response goes to the iterator, the final one included.
            call.queue.put((resp, final))
            if call.future is not None and call.first:
                call.first = False
                self._resolve(call, pb_utils.ResponseIterator(self, call))
            return
        # Not decoupled: the first real response is the answer.
        if real and call.result is None:
            call.result = resp
        if not final:
            return
        result = call.result if call.result is not None else resp
        call.result = None
        if call.future is None:
            call.queue.put((result, True))
        else:
            self._resolve(call, result)

    def _resolve(self, call, value):
        try:
            call.loop.call_soon_threadsafe(_resolve, call.future, value)
        except RuntimeError:
            pass  # the loop is closed: nobody is waiting

    def cancel_bls(self, call):
        self.send({"t": "icancel", "c": call.c})

    def abandon_bls(self, call):
        """A ResponseIterator was dropped before its final response."""
        call.abandoned = True
        if call.c in self.bls_calls:
            self.post_soon({"t": "icancel", "c": call.c})
        q = call.queue
        while True:
            try:
                q.get_nowait()
            except queue.Empty:
                break


# ---------------------------------------------------------------------------
# The model.


def _close_senders(reqs):
    # A function of its own, so no loop variable outlives it in the caller
    # and keeps a request (and its input views) alive.
    for req in reqs or ():
        if req._sender is not None:
            req._sender._close()


class _Stub:
    def __init__(self, conn):
        self.conn = conn
        self.model = None
        self.initialized = False
        self.completed = {}  # model.py path -> its class, imported by an autocomplete init
        self.instance_name = ""
        self.loop = None
        self.background = set()

    # -- asyncio -------------------------------------------------------------

    def get_loop(self):
        if self.loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="nereid-stub-asyncio", daemon=True).start()
            asyncio.set_event_loop(loop)
            self.loop = loop
        return self.loop

    def run_coroutine(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.get_loop()).result()

    def _maybe_await(self, value):
        if asyncio.iscoroutine(value):
            return self.run_coroutine(value)
        return value

    def _background_done(self, fut):
        self.background.discard(fut)
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            self._log_exception("async execute failed", exc)

    def _log_exception(self, what, exc):
        filename, line = "", 0
        tb = exc.__traceback__
        while tb is not None:
            filename, line = tb.tb_frame.f_code.co_filename, tb.tb_lineno
            tb = tb.tb_next
        try:
            self.conn.log("error", "%s: %s" % (what, _describe(exc)), filename, line)
        except OSError:
            pass

    # -- main loop -----------------------------------------------------------

    def run(self):
        conn = self.conn
        get = conn.main_q.get
        while True:
            msg = get()
            t = msg["t"]
            if t == "exec":
                self.on_exec(msg)
            elif t == "ready":
                self.on_ready(msg)
            elif t == "init":
                self.on_init(msg)
            elif t == "fin":
                self.on_fin()
            conn.flush_frees()

    # -- init ----------------------------------------------------------------

    def _import(self, path):
        path = os.path.abspath(path)
        version_dir = os.path.dirname(path)
        model_dir = os.path.dirname(version_dir)
        if version_dir in sys.path:
            sys.path.remove(version_dir)
        sys.path.insert(0, version_dir)
        if model_dir not in sys.path:
            sys.path.insert(1, model_dir)
        stem = os.path.splitext(os.path.basename(path))[0]
        # The module is "<version>.<stem>" inside a package for its version
        # directory, as in Triton, so that relative imports in model.py work.
        pkg_name = os.path.basename(version_dir) or "nereid_model"
        if pkg_name not in sys.modules:
            pkg = types.ModuleType(pkg_name)
            pkg.__path__ = [version_dir]
            pkg.__package__ = pkg_name
            spec = importlib.machinery.ModuleSpec(pkg_name, None, is_package=True)
            spec.submodule_search_locations = [version_dir]
            pkg.__spec__ = spec
            sys.modules[pkg_name] = pkg
        name = "%s.%s" % (pkg_name, stem)
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise _StubError("cannot load Python model file '%s'" % path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        cls = getattr(module, "TritonPythonModel", None)
        if not isinstance(cls, type):
            raise _StubError("Python model '%s' has no class TritonPythonModel" % path)
        return cls

    def on_init(self, msg):
        conn = self.conn
        if self.initialized:
            conn.send({"t": "inited", "error": _wire_error("the model is already initialized")})
            return
        mode = msg.get("mode")
        path = msg.get("path") or ""
        args = msg.get("args") or {}
        config = msg.get("config") or {}
        conn.decoupled = bool(msg.get("decoupled"))
        conn.model_name = args.get("model_name") or config.get("name") or ""
        try:
            conn.model_version = int(args.get("model_version", -1))
        except ValueError:
            conn.model_version = -1
        conn.model_dir = os.path.dirname(os.path.abspath(path))
        self.instance_name = args.get("model_instance_name") or conn.model_name
        if mode == "autocomplete":
            self._autocomplete(path, config)
            return
        if mode != "serve":
            conn.send({"t": "inited", "error": _wire_error("unknown init mode %r" % (mode,))})
            return
        conn.calls_allowed = True
        try:
            cls = self.completed.get(os.path.abspath(path)) or self._import(path)
            self.completed.clear()
            model = cls()
            init = getattr(model, "initialize", None)
            if init is not None:
                self._maybe_await(init(dict(args)))
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):
                raise
            conn.send({"t": "inited", "error": _wire_error(_describe(e))})
            return
        self.model = model
        self.initialized = True
        conn.send({"t": "inited"})

    def _autocomplete(self, path, config):
        conn = self.conn
        try:
            cls = self._import(path)
            mc = pb_utils.ModelConfig(config)
            fn = getattr(cls, "auto_complete_config", None)
            if fn is not None:
                mc = fn(mc)
                if not isinstance(mc, pb_utils.ModelConfig):
                    raise _StubError(
                        "auto_complete_config of model '%s' must return a "
                        "pb_utils.ModelConfig object" % (conn.model_name,)
                    )
            out = {"t": "inited", "config": mc._model_config}
            # The parent may keep this stub for the model's first instance:
            # its serve init then reuses the class imported here.
            self.completed[os.path.abspath(path)] = cls
        except BaseException as e:
            out = {"t": "inited", "error": _wire_error(_describe(e))}
        conn.send(out)

    # -- exec ----------------------------------------------------------------

    def _batch_error(self, msg_id, text, reqs):
        _close_senders(reqs)
        self.conn.send(
            {
                "t": "done",
                "id": msg_id,
                "error": _wire_error(
                    "Failed to process the request(s) for model instance '%s', message: %s"
                    % (self.instance_name, text)
                ),
            }
        )

    def on_exec(self, msg):
        conn = self.conn
        msg_id = msg.get("id")
        wire = msg.get("reqs") or []
        reqs = []
        try:
            if not self.initialized:
                raise _StubError("the model is not initialized")
            from_wire = pb_utils.InferenceRequest._from_wire
            tensor = conn.tensor_from_desc
            name, version = conn.model_name, conn.model_version
            for w in wire:
                reqs.append(from_wire(conn, name, version, w, [tensor(d) for d in w.get("in") or ()]))
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):
                raise
            # Inputs decoded so far are given back when `reqs` goes.
            self._batch_error(msg_id, _describe(e), reqs)
            return
        wire = msg = None
        try:
            execute = getattr(self.model, "execute", None)
            if execute is None:
                raise _StubError("Python model does not implement `execute` method.")
            conn.exec_active = True
            try:
                ret = execute(reqs)
                if type(ret) is not list and asyncio.iscoroutine(ret):
                    if conn.decoupled:
                        # As in Triton, a decoupled async execute runs on in the
                        # background; the instance takes its next batch now.
                        fut = asyncio.run_coroutine_threadsafe(ret, self.get_loop())
                        self.background.add(fut)
                        fut.add_done_callback(self._background_done)
                        ret = None
                    else:
                        ret = self.run_coroutine(ret)
            finally:
                conn.exec_active = False
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):
                raise
            self._batch_error(msg_id, _describe(e), reqs)
            return
        if conn.decoupled:
            if ret is not None:
                self._batch_error(
                    msg_id,
                    "Python model '%s' is decoupled, so its execute function must return None."
                    % (conn.model_name,),
                    reqs,
                )
                return
            reqs = None  # inputs nobody kept are freed on the done frame
            conn.send({"t": "done", "id": msg_id})
            return
        chunks = []
        try:
            resps = self._responses(reqs, ret, chunks)
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):
                raise
            _rollback(conn.arena, chunks)
            self._batch_error(msg_id, _describe(e), reqs)
            return
        # Drop the requests first: input views that nobody else holds are
        # gone now, so their frees ride on the done frame.
        _close_senders(reqs)
        reqs = ret = None
        conn.send({"t": "done", "id": msg_id, "resps": resps})

    def _responses(self, reqs, ret, chunks):
        n = len(reqs)
        if ret is None:
            items = [None] * n
        elif isinstance(ret, (list, tuple)):
            items = ret
            if len(items) != n:
                raise _StubError(
                    "Number of InferenceResponse objects do not match the number of "
                    "InferenceRequest objects: %d request(s), %d response(s)" % (n, len(items))
                )
        else:
            raise _StubError(
                "execute must return a list of InferenceResponse objects, found type '%s'"
                % (type(ret),)
            )
        body = self.conn.response_body
        out = []
        for i in range(n):
            resp = items[i]
            req = reqs[i]
            held = req._sender._held if req._sender is not None else None
            if resp is None:
                resp = held
                if resp is None and ret is None:
                    raise _StubError(
                        "execute returned None, but request %d has no response: a model "
                        "that is not decoupled returns one InferenceResponse per request, "
                        "or sends it with the request's response sender" % i
                    )
            elif held is not None:
                raise _StubError(
                    "request %d got two responses: one sent with its response sender "
                    "and one returned by execute" % i
                )
            if not isinstance(resp, pb_utils.InferenceResponse):
                raise _StubError(
                    "Expected an 'InferenceResponse' object in the execute function "
                    "return list, found type '%s'" % (type(resp),)
                )
            out.append(body(resp, req._out, {}, chunks))
        return out

    # -- ready, fin ------------------------------------------------------------

    def on_ready(self, msg):
        out = {"t": "ready_r", "id": msg.get("id"), "ok": False}
        try:
            if not self.initialized:
                raise _StubError("the model is not initialized")
            fn = getattr(self.model, "is_ready", None)
            out["ok"] = True if fn is None else bool(self._maybe_await(fn()))
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):
                raise
            out["ok"] = False
            out["error"] = _wire_error(_describe(e))
        self.conn.send(out)

    def on_fin(self):
        out = {"t": "fin_done"}
        if self.initialized:
            fn = getattr(self.model, "finalize", None)
            try:
                if fn is not None:
                    self._maybe_await(fn())
            except BaseException as e:
                out["error"] = _wire_error(_describe(e))
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
        try:
            self.conn.send(out)
        except OSError:
            pass
        _die(None, 0)


def main():
    # As Triton's stub does, leave Ctrl-C at the server's terminal to the
    # server: it finalizes its stubs and then ends them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fd = int(os.environ.get("NEREID_STUB_FD") or 3)
    try:
        sock = socket.socket(fileno=fd)
    except OSError as e:
        _die("no parent socket on fd %d: %s" % (fd, e), 1)
    sock.setblocking(True)
    conn = _Conn(sock)
    pb_utils._conn = conn
    stub = _Stub(conn)
    conn.start_reader()
    stub.run()


if __name__ == "__main__":
    main()
