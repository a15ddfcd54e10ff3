"""pipeline.core.overlap: the reader and writer threads around the model."""

import threading

import pytest

from pipeline.core.overlap import one_behind, prefetch


def test_one_behind_runs_work_in_another_thread_one_item_behind():
    events = []
    main = threading.get_ident()

    def items():
        for i in range(4):
            events.append(f"make {i}")
            yield i

    def work(i):
        assert threading.get_ident() != main
        events.append(f"work {i}")
        return i * 10

    assert one_behind(items(), work) == [0, 10, 20, 30]
    # never more than one item in flight: work(i) is done before item i+2 is made
    for i in range(2):
        assert events.index(f"work {i}") < events.index(f"make {i + 2}")


def test_one_behind_raises_the_first_error_and_stops():
    made = []

    def items():
        for i in range(10):
            made.append(i)
            yield i

    def work(i):
        if i == 1:
            raise ValueError("row 1 is bad")
        return i

    with pytest.raises(ValueError, match="row 1 is bad"):
        one_behind(items(), work)
    assert made == [0, 1, 2]  # the loop stopped one item after the failing one


def test_one_behind_of_nothing_is_nothing():
    assert one_behind(iter(()), lambda i: i) == []


def test_prefetch_keeps_order_and_reraises_the_producers_error():
    def make():
        yield from (1, 2, 3)
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for x in prefetch(make):
            got.append(x)
    assert got == [1, 2, 3]
