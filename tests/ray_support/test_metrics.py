from __future__ import annotations

from typing import Any

from greenflow.ray_support.metrics import CounterBuffer


class RecordingCounter:
    """What ``CounterBuffer`` sends: (value, tags) per ``inc`` call."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, dict[str, Any]]] = []

    def inc(self, value: float, tags: dict[str, Any]) -> None:
        self.calls.append((value, tags))


def test_counter_buffer_sends_one_sum_per_tag_set_and_forgets_it() -> None:
    sink = RecordingCounter()
    buffer = CounterBuffer(sink, {"app": "a"})  # type: ignore[arg-type]
    buffer.add(2.0, chain="x")
    buffer.add(3.0, chain="x")
    buffer.add(1.0, chain="y")
    buffer.add(0.0, chain="z")  # Ray refuses increments <= 0: never sent
    buffer.add(-1.0, chain="z")
    assert buffer.pending == 6.0
    assert sink.calls == []  # nothing leaves before a flush
    buffer.flush()
    assert sorted(sink.calls, key=lambda c: c[1]["chain"]) == [
        (5.0, {"app": "a", "chain": "x"}),
        (1.0, {"app": "a", "chain": "y"}),
    ]
    buffer.flush()  # nothing new: nothing sent
    assert len(sink.calls) == 2 and buffer.pending == 0.0
