"""The fake allocator, served on 127.0.0.1 for one test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.client.fakes import FakeAllocator, ServerThread


@pytest.fixture()
def allocator() -> Iterator[tuple[FakeAllocator, ServerThread]]:
    fake = FakeAllocator()
    with ServerThread(fake.app()) as server:
        yield fake, server
