"""The bounded search of the highest steady command rate and the percentile of the latency
figures (bench/bench_commands.py), on made-up answers: no server, no clock."""

from __future__ import annotations

from bench.bench_commands import percentile, search


async def probe_log(limit: float, start: float, ceiling: float) -> tuple[object, list[float]]:
    tried: list[float] = []

    async def holds(rate: float) -> bool:
        tried.append(rate)
        return rate <= limit

    return await search(holds, start, ceiling), tried


async def test_doubles_until_a_miss_then_bisects_twice() -> None:
    found, tried = await probe_log(700, 200, 3200)
    assert tried == [200, 400, 800, 600, 700]
    assert found == (700, 800)


async def test_halves_when_the_start_rate_already_misses() -> None:
    found, tried = await probe_log(60, 200, 3200)
    assert tried == [200, 100, 50, 75, 62]
    assert found == (50, 62)


async def test_the_search_is_bounded_both_ways() -> None:
    found, tried = await probe_log(1e9, 200, 3200)
    assert found == (3200, None) and tried == [200, 400, 800, 1600, 3200]
    found, tried = await probe_log(0, 200, 3200)
    assert found == (None, 6.25) and tried == [200, 100, 50, 25, 12.5, 6.25]


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([5.0], 99) == 5
    assert percentile([], 99) is None
