"""Nothing in the repository may shadow the standard library's ``platform`` module.

Ray, pandas and uvicorn import it, and ``ray job submit --working-dir .`` puts the
working directory first on every worker's path.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_platform_from_repo_root_gives_the_standard_library() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import platform; print(platform.__file__)"],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).parent == Path(sysconfig.get_paths()["stdlib"])


def test_no_top_level_platform_package_or_module() -> None:
    assert not (REPO / "platform").exists() and not (REPO / "platform.py").exists()
    assert (
        not (REPO / "tests" / "platform" / "__init__.py").exists()
        or (REPO / "tests" / "__init__.py").exists()
    ), "tests/ must be a package so tests/platform never becomes top-level"
