from __future__ import annotations

from typing import Any

import pytest

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


class FailingOnce(RecordingCounter):
    """Refuses the first call for chain "y", as a metrics backend hiccup would."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def inc(self, value: float, tags: dict[str, Any]) -> None:
        if tags.get("chain") == "y" and not self.failed:
            self.failed = True
            raise RuntimeError("metrics backend unavailable")
        super().inc(value, tags)


def test_a_failed_send_keeps_its_sum_for_the_next_flush() -> None:
    sink = FailingOnce()
    buffer = CounterBuffer(sink)  # type: ignore[arg-type]
    buffer.add(2.0, chain="x")
    buffer.add(1.0, chain="y")
    with pytest.raises(RuntimeError, match="unavailable"):
        buffer.flush()
    assert sink.calls == [(2.0, {"chain": "x"})] and buffer.pending == 1.0  # x sent, y kept
    buffer.add(4.0, chain="y")
    buffer.flush()
    assert sink.calls[-1] == (5.0, {"chain": "y"}) and buffer.pending == 0.0
