"""The administration CLIs' shared pieces: a development credential is kept owner-only and read
back (services/common/admin.py); the `NAME PASSWORD` lines the compose setup feeds to
`kafka_admin upsert-scram-users`. The subcommands themselves run in tests/integration
(test_api_keys.py, test_operators.py, test_api_store.py, test_run_banner.py, test_kafka_auth.py)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from services.common.admin import keep_secret, kept_secret
from services.common.kafka_admin import credentials


def test_a_kept_credential_is_readable_by_its_owner_only_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "state" / "dev-key"

    assert kept_secret(path) is None
    keep_secret("mk_0123456789abcdef.secret", path)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert kept_secret(path) == "mk_0123456789abcdef.secret"


def test_credential_lines_are_name_and_password_comments_and_blanks_skipped() -> None:
    text = "# dev\n\nmailctl-admin s3cret\n  mailctl-api  other \n"

    assert credentials(text) == [("mailctl-admin", "s3cret"), ("mailctl-api", "other")]


def test_a_credential_line_without_a_password_is_refused_with_its_number() -> None:
    with pytest.raises(ValueError, match="line 2"):
        credentials("a b\nlonely\n")
