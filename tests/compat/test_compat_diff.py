"""The differ itself: compare() must see each kind of difference, and the
allowlist must allow only what its pattern and condition name. No servers."""

from compat_diff import Allowed, Allowlist, Answer, Diff, compare, http_answer, names_what_triton_names


def keys(diffs):
    return sorted(d.key for d in diffs)


def test_identical_answers_have_no_differences():
    a = http_answer(200, {"content-type": "application/json"}, b'{"x": [1, {"y": "z"}]}')
    assert compare("c", a, a) == []


def test_each_kind_is_seen():
    n = http_answer(404, {"content-type": "application/json"}, b'{"error": "no model \'m\'"}')
    t = http_answer(400, {"content-type": "text/plain"}, b'{"error": "bad"}')
    assert keys(compare("c", n, t)) == ["c content-type ", "c message ", "c status "]
    n = Answer(200, body={"a": 1, "b": [1, 2], "c": "s", "only_n": 0})
    t = Answer(200, body={"a": "1", "b": [1], "c": "t", "only_t": 0})
    assert keys(compare("c", n, t)) == [
        "c shape $.a", "c shape $.b.length", "c shape $.only_n", "c shape $.only_t", "c value $.c",
    ]


def test_volatile_values_and_value_free_comparison():
    n, t = Answer(200, body={"ns": 5, "k": 1}), Answer(200, body={"ns": 7, "k": 2})
    assert keys(compare("c", n, t, volatile=["*ns"])) == ["c value $.k"]
    assert compare("c", n, t, values=False) == []
    # A volatile value still has to have the same type.
    assert keys(compare("c", Answer(200, body={"ns": "5", "k": 2}), t, volatile=["*ns"])) == ["c shape $.ns"]


def test_allowlist_pattern_condition_and_staleness():
    d1 = Diff("case_a", "status", "", 400, 500)
    d2 = Diff("case_b", "status", "", 404, 400)
    allow = Allowlist([
        Allowed("case_* status ", "r", when=lambda d: d.nereid == 400),
        Allowed("case_c value $.x", "r"),
        Allowed("other value $.y", "r"),
    ])
    assert allow.sift([d1, d2], cases=["case_a", "case_b", "case_c"]) == [d2]
    # case_c ran and its entry allowed nothing: stale. "other" never ran.
    assert [e.pattern for e in allow.stale()] == ["case_c value $.x"]


def test_brackets_in_patterns_are_literal():
    e = Allowed("s shape $.m[*].u.length", "r")
    assert e.matches(Diff("s", "shape", "$.m[3].u.length", 1, 0))
    assert not e.matches(Diff("s", "shape", "$.m3.u.length", 1, 0))


def test_message_condition_needs_every_quoted_subject():
    triton = "[request id: <id_unknown>] input 'IN' of model 'm' has datatype 'FP32'"
    ok = Diff("c", "message", "", "input 'IN' of 'm': wants 'FP32'", triton)
    missing = Diff("c", "message", "", "input 'IN' has the wrong datatype", triton)
    unquoted = Diff("c", "message", "", "anything", "no quotes here")
    assert names_what_triton_names(ok)
    assert not names_what_triton_names(missing)
    assert not names_what_triton_names(unquoted)
