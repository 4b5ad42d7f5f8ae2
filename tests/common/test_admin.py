"""The administration CLIs' shared piece (services/common/admin.py): a development credential is
kept owner-only and read back; the subcommands themselves run in tests/integration
(test_api_keys.py, test_operators.py, test_api_store.py, test_run_banner.py)."""

from __future__ import annotations

import stat
from pathlib import Path

from services.common.admin import keep_secret, kept_secret


def test_a_kept_credential_is_readable_by_its_owner_only_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "state" / "dev-key"

    assert kept_secret(path) is None
    keep_secret("mk_0123456789abcdef.secret", path)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert kept_secret(path) == "mk_0123456789abcdef.secret"
