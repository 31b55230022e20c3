"""Malformed-input fuzzing of the real HTTP API: whatever a client sends, the app answers
a 4xx with a ``detail`` message (or 200 for a valid request), never a 5xx, and no replica
goes down."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.serve_apps.conftest import call

pytestmark = [pytest.mark.slow, pytest.mark.ray]

ID_MAX = 2**62  # the allocator's bound on user, item and activity ids
MAX_HISTORY = 10_000
MAX_BODY = 256 * 1024
REQUEST_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
KEYS = ("user_id", "history", "k", "activity", "request_id")

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)
odd_ids = st.sampled_from([0, -1, 2**62, 2**62 + 1, 2**70, -(2**70), "1", 1.5, 1.0, True, False,
                           None, [], {}, [1], "", 1e300])  # fmt: skip
item_ids = st.integers(min_value=1, max_value=50)
histories = st.one_of(
    st.none(),
    st.lists(item_ids, max_size=12),
    st.lists(item_ids | odd_ids, min_size=1, max_size=6),
    st.lists(st.lists(item_ids, max_size=3), min_size=1, max_size=3),
    st.lists(st.text(max_size=4), min_size=1, max_size=3),
    st.sampled_from(["1,2", 3, {"1": 2}, True]),
    st.just(list(range(1, 20_001))),  # 20k ids: over the 10k limit, under the body limit
    st.just([1] * MAX_HISTORY),  # exactly at the limit
)
real_key_bodies = st.fixed_dictionaries(
    {"user_id": st.integers(min_value=1, max_value=90) | odd_ids | st.integers()},
    optional={
        "history": histories,
        "k": st.integers(min_value=1, max_value=6) | st.sampled_from([0, -3, 10**9, 2**70, "2",
                                                                      2.0, None, True]),
        "activity": st.integers(min_value=0, max_value=100) | odd_ids,
        "request_id": st.from_regex(REQUEST_ID, fullmatch=True) | st.text(max_size=70)
        | st.none() | st.integers(),
        "extra": json_values,
        "USER_ID": st.integers(),
    },
)  # fmt: skip
raw_bodies = st.binary(max_size=300) | st.sampled_from(
    [b"", b"{", b"[]", b"null", b'{"user_id": 1,}', b'{"user_id": NaN}', b'{"user_id": Infinity}',
     b'{"user_id": 1e400}', b"\xff\xfe\x00{}", b'{"user_id": 1}\x00', b'{"user_id":1}{"k":1}',
     b'{"user_id": 1, "user_id": "x"}', '{"user_id": "\ud800"}'.encode("utf-8", "surrogatepass")]
)  # fmt: skip
valid_bodies = st.fixed_dictionaries(
    {"user_id": st.integers(min_value=1, max_value=ID_MAX), "history": st.lists(item_ids, max_size=12)},
    optional={"k": st.integers(min_value=1, max_value=5),
              "activity": st.integers(min_value=0, max_value=ID_MAX),
              "request_id": st.from_regex(REQUEST_ID, fullmatch=True)},
)  # fmt: skip
bodies = st.one_of(
    json_values.map(lambda v: ("json", v)),
    valid_bodies.map(lambda v: ("json", v)),
    real_key_bodies.map(lambda v: ("json", v)),
    raw_bodies.map(lambda v: ("raw", v)),
)


def _replicas(app: str) -> set[str]:
    import ray

    prefix = f"SERVE_REPLICA::{app}#"
    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith(prefix)}  # fmt: skip


@pytest.fixture(scope="module")
def replicas_before(app_url) -> set[str]:
    """The app's replica actors before the fuzzing: the same ones must serve after it."""
    names = _replicas("greenflow")
    assert names
    return names


@pytest.fixture(scope="module")
def assets(serve_run):
    """What decides validity: known users, item ids 1..num_items, k in 1..exposed_k."""
    from greenflow.platform.serving import load_serving_assets

    return load_serving_assets(serve_run.run_dir)


def _int(v: Any, lo: int, hi: int) -> bool:
    return type(v) is int and lo <= v <= hi


def expected_ok(body: Any, assets: Any) -> bool | None:
    """True: must be served (200); False: must be refused (4xx); None: 200 or 404."""
    if not isinstance(body, dict) or set(body) - set(KEYS) or "user_id" not in body:
        return False
    user, history = body["user_id"], body.get("history")
    if not _int(user, 1, ID_MAX):
        return False
    if history is not None and not (
        isinstance(history, list)
        and len(history) <= MAX_HISTORY
        and all(_int(i, 1, assets.num_items) for i in history)
    ):
        return False
    k, activity, rid = body.get("k"), body.get("activity"), body.get("request_id")
    if k is not None and not _int(k, 1, assets.exposed_k):
        return False
    if activity is not None and not _int(activity, 0, ID_MAX):
        return False
    if rid is not None and not (isinstance(rid, str) and REQUEST_ID.fullmatch(rid)):
        return False
    known = user < len(assets.users) and user in assets.histories
    return True if history is not None or known else None


def _check(status: int, doc: Any, want: bool | None, what: str) -> None:
    assert status < 500, f"{what} -> {status} {doc!r:.300}"
    if want is True:
        assert status == 200, f"{what} -> {status} {doc!r:.300}"
    elif want is False:
        assert 400 <= status < 500, f"{what} -> {status} {doc!r:.300}"
    else:
        assert status in (200, 404), f"{what} -> {status} {doc!r:.300}"
    if status == 200:
        assert set(doc) >= {"items", "chain", "flops", "dual_price", "request_id", "degraded"}
    else:
        assert isinstance(doc, dict) and doc.get("detail"), f"{what}: no detail in {doc!r:.300}"


def _healthy(app_url: str) -> None:
    status, health = call(f"{app_url}/healthz", timeout=10)
    assert status == 200 and health["status"] == "ok"
    status, doc = call(f"{app_url}/recommend", {"user_id": 1, "history": [1, 2, 3], "k": 2},
                       timeout=30)  # fmt: skip
    assert status == 200 and 1 <= len(doc["items"]) <= 2, doc


@settings(max_examples=150, deadline=None, derandomize=False, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])  # fmt: skip
@given(case=bodies)
def test_recommend_never_fails_on_malformed_input(app_url, assets, replicas_before, case) -> None:
    kind, value = case
    if kind == "raw":
        status, doc = call(f"{app_url}/recommend", raw=value, timeout=30)
        _check(status, doc, False, f"raw {value[:80]!r}")
    else:
        text = json.dumps(value)  # sent raw: a JSON null is a body too, not a GET
        status, doc = call(f"{app_url}/recommend", raw=text.encode(), timeout=30)
        _check(status, doc, expected_ok(value, assets), f"json {text[:200]}")
    event(f"{kind} -> {status}")  # the mix of answers: --hypothesis-show-statistics


def test_edge_bodies_and_query_strings(app_url, assets) -> None:
    url = f"{app_url}/recommend"
    cases: list[tuple[Any, bool | None]] = [
        ({"user_id": 0, "history": [1]}, False),
        ({"user_id": -1, "history": [1]}, False),
        ({"user_id": 2**70, "history": [1]}, False),
        ({"user_id": ID_MAX, "history": [1, 2]}, True),  # unknown user with a history
        ({"user_id": "1"}, False),
        ({"user_id": 1.5}, False),
        ({"user_id": True}, False),
        ({"user_id": 1, "history": [0]}, False),
        ({"user_id": 1, "history": [assets.num_items + 1]}, False),
        ({"user_id": 1, "history": [2**70]}, False),
        ({"user_id": 1, "history": ["1"]}, False),
        ({"user_id": 1, "history": [[1]]}, False),
        ({"user_id": 1, "history": list(range(1, 20_001))}, False),
        ({"user_id": 1, "history": [1] * MAX_HISTORY}, True),
        ({"user_id": 1, "history": [1], "k": 0}, False),
        ({"user_id": 1, "history": [1], "k": 10**9}, False),
        ({"user_id": 1, "history": [1], "k": assets.exposed_k}, True),
        ({"user_id": 1, "history": [1], "activity": -1}, False),
        ({"user_id": 1, "history": [1], "surprise": 1}, False),
        ({"user_id": 1, "history": [1], "request_id": "a b"}, False),
        ({"user_id": 1, "history": [1], "request_id": "x" * 65}, False),
        ({"user_id": 10**6}, None),  # unknown user without a history: 404
    ]
    for body, want in cases:
        status, doc = call(url, body, timeout=30)
        _check(status, doc, want, json.dumps(body)[:120])
    assert call(url, {"user_id": 10**6}, timeout=30)[0] == 404
    # Raw bytes, and a body over the size limit (a 413, read but never parsed).
    for raw in (b"\x80\x81\x82", b"not json", b'{"user_id": 1', b"[1, 2]"):
        status, doc = call(url, raw=raw, timeout=30)
        _check(status, doc, False, repr(raw))
    big = b'{"user_id": 1, "history": [' + b"1, " * (MAX_BODY // 3 + 10) + b"1]}"
    assert len(big) > MAX_BODY
    status, doc = call(url, raw=big, timeout=30)
    assert status == 413 and "bytes" in doc["detail"], (status, doc)
    # The windows query: a non-number or a non-finite time is a 4xx with a message.
    for since in ("abc", "nan", "NaN", "inf", "-inf", "1e999", "", "0x10"):
        status, doc = call(f"{app_url}/allocator/windows?since={since}", timeout=30)
        assert 400 <= status < 500 and doc.get("detail"), (since, status, doc)
    assert call(f"{app_url}/allocator/windows?since=0", timeout=30)[0] == 200


def test_still_healthy_after_fuzzing(app_url, replicas_before) -> None:
    """Runs after the fuzzing (file order): health, a valid request, no replica restarted."""
    from ray import serve

    _healthy(app_url)
    status, state = call(f"{app_url}/allocator/state", timeout=10)
    assert status == 200 and state["rejected"] > 0 and state["errors"] == 0, state
    app = serve.status().applications["greenflow"]
    assert app.status == "RUNNING"
    for name, dep in app.deployments.items():
        assert dep.status == "HEALTHY", (name, dep)
    assert _replicas("greenflow") == replicas_before  # none died and was replaced
