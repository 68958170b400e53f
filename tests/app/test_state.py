"""The session lock: re-entrant, and granted in the order it was asked for."""

import threading
import time

import pytest

from annotator.app.state import OrderedLock, Session


def _wait_for(condition, timeout=30.0):
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.001)


def test_waiting_threads_get_the_lock_in_the_order_they_asked():
    lock, order, threads = OrderedLock(), [], []
    lock.acquire()

    def event(i):
        with lock:
            order.append(i)

    for i in range(12):
        threads.append(threading.Thread(target=event, args=(i,)))
        threads[-1].start()
        _wait_for(lambda i=i: lock.waiting() == i + 1)  # event i holds its place in the line
    lock.release()
    for t in threads:
        t.join(30)
    assert order == list(range(12))
    assert lock.waiting() == 0


def test_the_lock_is_reentrant_and_only_its_holder_releases_it():
    lock = Session().lock
    assert isinstance(lock, OrderedLock)
    with lock, lock:  # a Workbench method calling another on the same session
        refused = []

        def release_from_another_thread():
            try:
                lock.release()
            except RuntimeError as e:
                refused.append(str(e))

        other = threading.Thread(target=release_from_another_thread)
        other.start()
        other.join()
        assert refused and "does not hold" in refused[0]
        got = []
        waiter = threading.Thread(target=lambda: (lock.acquire(), got.append(1), lock.release()))
        waiter.start()
        _wait_for(lambda: lock.waiting() == 1)
    waiter.join(30)
    assert got == [1]
    with pytest.raises(RuntimeError, match="does not hold"):
        lock.release()


def test_a_waiter_that_times_out_gives_up_its_place_in_the_line():
    lock, got = OrderedLock(), []
    lock.acquire()
    outcome = []
    impatient = threading.Thread(target=lambda: outcome.append(lock.acquire(timeout=0.2)))
    impatient.start()
    impatient.join(30)
    assert outcome == [False] and lock.waiting() == 0
    assert not threading.Thread(target=lambda: got.append(lock.acquire(blocking=False))).start()
    _wait_for(lambda: got == [False])  # held by this thread: a non-blocking try fails
    patient = threading.Thread(target=lambda: (lock.acquire(), got.append(True), lock.release()))
    patient.start()
    _wait_for(lambda: lock.waiting() == 1)
    lock.release()  # the timed-out place is skipped: the patient waiter gets the lock
    patient.join(30)
    assert got == [False, True]
    assert lock.acquire(blocking=False)
    lock.release()
