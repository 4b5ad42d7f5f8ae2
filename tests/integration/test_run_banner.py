"""`make run`'s banner (scripts/run_banner.sh) against the running servers: with the local sink it
prints the sink's addresses; in external-SMTP mode (SMTP_HOST set) it prints no sink URL, since
none exists."""

from __future__ import annotations

import os
import subprocess

from tests.integration.processor_harness import REPO_ROOT


def banner(**env: str) -> str:
    run = subprocess.run(
        ["bash", "scripts/run_banner.sh"],
        cwd=REPO_ROOT,
        env={**{k: v for k, v in os.environ.items() if k != "SMTP_HOST"}, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return run.stdout


def test_the_banner_prints_the_sink_only_when_there_is_one() -> None:
    local = banner()
    external = banner(SMTP_HOST="mail.example.org", SMTP_PORT="2525")

    assert "SMTP sink (received mail) http://127.0.0.1:" in local
    assert "SMTP sink" not in external and "/messages" not in external
    assert "SMTP (external, no sink)  mail.example.org:2525" in external
