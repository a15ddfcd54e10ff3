"""The reading split's arithmetic (pipeline.loaders.order), checked row by row."""

from collections import Counter

import pytest

from pipeline.loaders.order import bucket_pieces, file_order, unit_bounds, unit_pieces

A, B = (4, 8, 8), (4, 8, 12)
COUNTS = [{A: 5, B: 2}, {B: 4}, {A: 3, B: 1}]  # three files, rows of two shapes


EVERY = sorted((f, s, k) for f, c in enumerate(COUNTS) for s, n in c.items() for k in range(n))


def rows_of(pieces):
    """(file, shape, index among the file's rows of that shape) of every row the pieces name."""
    return [(p.file, p.shape, k) for p in pieces for k in range(p.start, p.stop)]


@pytest.mark.parametrize("shuffle", [False, True])
def test_each_shape_is_cut_into_whole_batches_per_unit(shuffle):
    order = file_order(3, seed=1, epoch=2, shuffle=shuffle)
    # 8 rows of A, 7 of B, 2 units, batches of 2: "drop" 2 batches of A and 1 of B a unit,
    # "pad" 2 and 2 (B wrapped round by one row)
    for remainder, per_unit in (("drop", {A: 4, B: 2}), ("pad", {A: 4, B: 4})):
        units = [bucket_pieces(COUNTS, order, 2, u, 2, remainder) for u in range(2)]
        for pieces in units:  # as many rows of each shape on each unit, in whole batches of 2
            assert Counter(p.shape for p in pieces for _ in range(p.start, p.stop)) == per_unit
            places = [order.index(p.file) + 10 * p.lap for p in pieces]
            assert places == sorted(places)  # in reading order: a file's shapes together
        seen = rows_of(units[0]) + rows_of(units[1])
        if remainder == "drop":  # disjoint; 3 rows of B left out
            assert len(seen) == len(set(seen)) == 12
        else:  # every row at least once, wrapped round to fill
            assert set(seen) == {
                (f, s, k) for f, c in enumerate(COUNTS) for s, n in c.items() for k in range(n)
            }


def test_keep_gives_every_row_exactly_once():
    seen = [r for u in range(3) for r in rows_of(bucket_pieces(COUNTS, [0, 1, 2], 3, u, 2, "keep"))]
    assert sorted(seen) == sorted(
        (f, s, k) for f, c in enumerate(COUNTS) for s, n in c.items() for k in range(n)
    )


def test_rows_split_evenly_and_wrap_round_with_pad():
    assert [unit_bounds(10, 4, u, "pad") for u in range(4)] == [(0, 3), (3, 6), (6, 9), (9, 12)]
    last = unit_pieces([4, 6], [1, 0], 9, 12)  # past the end: the stream again from its start
    assert [(p.file, p.start, p.stop, p.lap) for p in last] == [(0, 3, 4, 0), (1, 0, 2, 1)]
