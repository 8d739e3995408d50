"""Answers of two servers to one request, and what differs between them.

An `Answer` is what a client sees of one reply: the HTTP status or gRPC
code, the media type, the JSON body (or a protobuf message turned into
JSON) and the error text. `compare` lists the differences between Nereid's
answer and Triton's as `Diff`s whose key reads

    <case> <kind> <path>

e.g. `server_metadata value $.version` or `stats shape $.model_stats[0].x`,
where kind is one of status, content-type, message, body, shape (a key
present on one side only, another JSON type, another list length) and value
(the same key with another value). `Allowlist` matches keys against
patterns in which `*` stands for any text (nothing else is special).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable

# A body that is not JSON (or no body at all).
NOT_JSON = object()


@dataclass
class Answer:
    status: Any  # HTTP status (int) or gRPC code name ("OK", "NOT_FOUND", ...)
    content_type: str | None = None  # media type without parameters; HTTP only
    body: Any = NOT_JSON  # parsed JSON, or NOT_JSON
    raw: bytes = b""  # the body as sent, for non-JSON bodies
    message: str | None = None  # error text: HTTP {"error": ...} or gRPC details

    def brief(self) -> str:
        text = self.raw[:300] if self.body is NOT_JSON else json.dumps(self.body)[:300]
        return f"{self.status} {self.content_type or ''} {text}"


def http_answer(status: int, headers: dict, body: bytes) -> Answer:
    ctype = headers.get("content-type")
    media = ctype.split(";")[0].strip().lower() if ctype else None
    parsed = NOT_JSON
    if body:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = NOT_JSON
    message = parsed.get("error") if isinstance(parsed, dict) and status != 200 else None
    return Answer(status=status, content_type=media, body=parsed, raw=body, message=message)


@dataclass(frozen=True)
class Diff:
    case: str
    kind: str
    path: str
    nereid: Any
    triton: Any

    @property
    def key(self) -> str:
        return f"{self.case} {self.kind} {self.path}"

    def __str__(self):
        return f"{self.key}: nereid={_short(self.nereid)} triton={_short(self.triton)}"


def _short(v, limit=240):
    text = v if isinstance(v, str) else json.dumps(v) if _jsonable(v) else repr(v)
    return text if len(text) <= limit else text[:limit] + f"...({len(text) - limit} more)"


def _jsonable(v):
    try:
        json.dumps(v)
        return True
    except (TypeError, ValueError):
        return False


def _type(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        # JSON has one number type; 1 and 1.0 are the same shape.
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def _glob(pattern: str) -> re.Pattern:
    return re.compile("^" + ".*".join(re.escape(p) for p in pattern.split("*")) + "$")


def _volatile(path: str, patterns) -> bool:
    return any(_glob(p).match(path) for p in patterns)


def json_diffs(case, n, t, path="$", values=True, volatile=()) -> list[Diff]:
    """Differences between two JSON values: shapes always, leaf values
    unless `values` is false or the path matches a `volatile` pattern."""
    out = []
    tn, tt = _type(n), _type(t)
    if tn != tt:
        return [Diff(case, "shape", path, f"<{tn}>", f"<{tt}>")]
    if tn == "object":
        for k in sorted(set(n) | set(t)):
            sub = f"{path}.{k}"
            if k not in t:
                out.append(Diff(case, "shape", sub, n[k], "<missing>"))
            elif k not in n:
                out.append(Diff(case, "shape", sub, "<missing>", t[k]))
            else:
                out += json_diffs(case, n[k], t[k], sub, values, volatile)
        return out
    if tn == "array":
        if len(n) != len(t):
            out.append(Diff(case, "shape", f"{path}.length", len(n), len(t)))
        for i, (a, b) in enumerate(zip(n, t)):
            out += json_diffs(case, a, b, f"{path}[{i}]", values, volatile)
        return out
    if values and n != t and not _volatile(path, volatile):
        out.append(Diff(case, "value", path, n, t))
    return out


def compare(case: str, n: Answer, t: Answer, values=True, volatile=()) -> list[Diff]:
    """Every difference between Nereid's answer `n` and Triton's `t`."""
    out = []
    if n.status != t.status:
        out.append(Diff(case, "status", "", n.status, t.status))
    if n.content_type != t.content_type:
        out.append(Diff(case, "content-type", "", n.content_type, t.content_type))
    if (n.message is None) != (t.message is None) or (n.message != t.message and not _volatile("message", volatile)):
        out.append(Diff(case, "message", "", n.message, t.message))
    nj, tj = n.body is not NOT_JSON, t.body is not NOT_JSON
    if nj and tj:
        if n.message is not None and t.message is not None:
            # The error text is compared above; here only the body's shape.
            out += json_diffs(case, n.body, t.body, values=False)
        else:
            out += json_diffs(case, n.body, t.body, values=values, volatile=volatile)
    elif nj != tj or (n.raw != t.raw and values):
        out.append(Diff(case, "body", "", n.raw[:300], t.raw[:300]))
    return out


@dataclass
class Allowed:
    """A known difference: `pattern` matches Diff keys, `reason` says why
    it is not a bug."""

    pattern: str
    reason: str
    # Allows only the diffs this also accepts (None: every matching one).
    when: Callable[[Diff], bool] | None = None
    used: bool = field(default=False, compare=False)

    def matches(self, d: Diff) -> bool:
        return bool(_glob(self.pattern).match(d.key)) and (self.when is None or bool(self.when(d)))

    @property
    def case_pattern(self) -> str:
        return self.pattern.split(" ", 1)[0]


class Allowlist:
    def __init__(self, entries: list[Allowed]):
        self.entries = entries
        self.seen: list[tuple[Diff, Allowed | None]] = []
        self.cases_run: set[str] = set()

    def sift(self, diffs: list[Diff], cases=()) -> list[Diff]:
        """The diffs no entry allows; marks the entries that allowed one."""
        self.cases_run.update(cases)
        bad = []
        for d in diffs:
            self.cases_run.add(d.case)
            entry = next((e for e in self.entries if e.matches(d)), None)
            self.seen.append((d, entry))
            if entry is None:
                bad.append(d)
            else:
                entry.used = True
        return bad

    def stale(self) -> list[Allowed]:
        """Entries for cases that ran but allowed nothing: the difference is
        gone and the entry must go too."""
        return [
            e
            for e in self.entries
            if not e.used and any(_glob(e.case_pattern).match(c) for c in self.cases_run)
        ]

    def report(self) -> str:
        lines = []
        for d, entry in self.seen:
            lines.append(f"{'ALLOWED' if entry else 'NEW    '} {d}" + (f"\n        reason: {entry.reason}" if entry else ""))
        return "\n".join(lines)


REQUEST_ID_PREFIX = re.compile(r"^\[request id: [^\]]*\] ")


def quoted(text: str) -> set[str]:
    """The 'quoted' things an error text names (models, inputs, types)."""
    return set(re.findall(r"'([^']*)'", text or ""))


def names_what_triton_names(d: Diff) -> bool:
    """For a message diff: both sides are errors, Triton's text names
    something in quotes and Nereid's names every such subject too (its
    wording may differ)."""
    if d.kind != "message" or not isinstance(d.nereid, str) or not isinstance(d.triton, str):
        return False
    theirs = quoted(REQUEST_ID_PREFIX.sub("", d.triton))
    return bool(theirs) and theirs <= quoted(d.nereid)
