"""The scale case's path at 100,000 recipients (bench/bench_scale.py; `make bench-scale` runs
it at 10,000,000): intake through the commands topic, the release, a SIGKILL of the dispatcher
in the middle of the send and its restart from a snapshot; exactly one send per contact, none
lost; then the projections worker's catch-up on the whole log (the view holds every recipient in
its final state) and the read API's recipients pages on that view. Asserts no time."""

from __future__ import annotations

from pathlib import Path

from bench import bench_scale
from bench.harness.servers import servers

N = 100_000
PAGES = 20


async def test_a_large_message_is_sent_exactly_once_through_a_restart_from_a_snapshot(
    tmp_path: Path,
) -> None:
    result = await bench_scale.run(
        N, tmp_path, servers(), verify=True, snapshot_interval_s=0.5, pages=PAGES
    )
    assert result["released"] == N and result["released_distinct"] == N
    assert result["send_records"] == N and result["send_records_distinct"] == N
    assert str(result["restart_source"]).startswith("snapshot-"), result
    # The projections caught up on the whole log: one row per contact, each released.
    assert result["view_rows"] == N and result["view_states"] == {"released": N}, result
    # Every page after a random cursor answered 200 in keyset order (the bench raises if not).
    assert result["pages"] == PAGES and result["page_items"] > 0, result
    assert bench_scale.problems({"scale": result}) == []
