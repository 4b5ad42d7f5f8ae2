"""The scale case's path at 100,000 recipients (bench/bench_scale.py; `make bench-scale` runs
it at 10,000,000): intake through the commands topic, the release, a SIGKILL of the dispatcher
in the middle of the send and its restart from a snapshot; exactly one send per contact, none
lost. Asserts no time."""

from __future__ import annotations

from pathlib import Path

from bench import bench_scale

N = 100_000


async def test_a_large_message_is_sent_exactly_once_through_a_restart_from_a_snapshot(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    result = await bench_scale.run(
        N, tmp_path, kafka_bootstrap, verify=True, snapshot_interval_s=0.5
    )
    assert result["released"] == N and result["released_distinct"] == N
    assert result["send_records"] == N and result["send_records_distinct"] == N
    assert str(result["restart_source"]).startswith("snapshot-"), result
