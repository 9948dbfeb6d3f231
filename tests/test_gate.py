"""retrieval.gate: at most `slots` holders, admitted in arrival order, and a slot is never lost."""

from __future__ import annotations

import threading
import time

import pytest

from retrieval.gate import FifoGate


def _wait_until(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.001)


def test_waiters_enter_in_the_order_they_came():
    gate = FifoGate(1)
    entered: list[int] = []
    gate.__enter__()  # the gate is full: everyone below waits
    threads = []
    for n in range(6):
        def enter(n=n):
            with gate:
                entered.append(n)
        thread = threading.Thread(target=enter)
        thread.start()
        threads.append(thread)
        _wait_until(lambda: gate.waiting == n + 1)  # queued before the next one comes
    # A newcomer arriving as the slot is handed over must queue behind the six.
    gate.__exit__(None, None, None)
    with gate:
        entered.append(99)
    for thread in threads:
        thread.join()
    assert entered == [0, 1, 2, 3, 4, 5, 99]


@pytest.mark.parametrize("slots", [1, 2, 3])
def test_never_more_holders_than_slots(slots):
    gate = FifoGate(slots)
    inside, most = 0, 0
    lock = threading.Lock()

    def work():
        nonlocal inside, most
        for _ in range(20):
            with gate:
                with lock:
                    inside += 1
                    most = max(most, inside)
                time.sleep(0.0005)
                with lock:
                    inside -= 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most == slots and inside == 0


def test_a_holder_that_raises_gives_its_slot_back():
    gate = FifoGate(1)
    with pytest.raises(ValueError):
        with gate:
            raise ValueError("boom")
    done = threading.Event()
    threading.Thread(target=lambda: (gate.__enter__(), done.set())).start()
    assert done.wait(2.0)


def test_the_default_is_one_slot_per_core(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    assert FifoGate().slots == 6
    monkeypatch.setattr("os.cpu_count", lambda: None)
    assert FifoGate().slots == 1
    assert FifoGate(0).slots == 1
