"""The layout a newcomer reads (issue 13): README's layout table names every top-level folder of
the repository and every folder of services/, and each path it names exists; the read API
imports nothing from the projections package (its views reader is injected by the entry point)."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _layout_paths() -> list[str]:
    readme = (REPO_ROOT / "README.md").read_text()
    table = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    return [
        path
        for cell in re.findall(r"^\| ([^|]+) \|", table, re.M)
        for path in re.findall(r"`([^`]+/)`", cell)
    ]


def _tracked_folders(under: str = "") -> set[str]:
    files = subprocess.run(
        ["git", "ls-files", *([under] if under else [])],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    depth = under.count("/") + 1
    return {"/".join(f.split("/")[:depth]) + "/" for f in files if f.count("/") >= depth}


def test_every_path_in_the_layout_table_exists() -> None:
    paths = _layout_paths()

    assert paths
    assert [p for p in paths if not (REPO_ROOT / p).is_dir()] == []


def test_the_layout_table_names_every_top_level_folder_and_every_service() -> None:
    named = set(_layout_paths())
    # Hidden folders (CI) are not the product's layout.
    folders = {f for f in _tracked_folders() if not f.startswith(".")}
    services = {f for f in _tracked_folders("services/") if not f.endswith("__pycache__/")}

    # A folder is named by itself or by the folders inside it it names (services/...).
    assert {f for f in folders if not any(n.startswith(f) for n in named)} == set()
    assert services - named == set()


def test_the_read_api_imports_nothing_from_the_projections_package() -> None:
    source = (REPO_ROOT / "services" / "commands" / "read_api.py").read_text()
    imported = [
        name
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name in (
            [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        )
    ]

    assert [m for m in imported if m.startswith("services.projections")] == []
