"""The test harness itself: isolated from a developer's environment, and strict about skips in CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rag.settings import Settings
from tests.conftest import REPO


def test_no_rag_variable_or_dotenv_reaches_the_tests():
    assert not [k for k in os.environ if k.startswith("RAG_")]
    assert Path.cwd().resolve() != REPO and not Path(".env").exists()


def test_default_paths_resolve_outside_the_repository():
    settings = Settings()
    for path in (settings.index_dir, settings.model_cache_dir, settings.eval_reports_dir):
        assert REPO not in path.resolve().parents, path


def _pytest(tmp_path: Path, body: str, ci: str | None) -> subprocess.CompletedProcess:
    (tmp_path / "test_sample.py").write_text(body)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"} | ({"CI": ci} if ci is not None else {})
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.ci_strict", "-p", "no:cacheprovider",
                           "-c", str(tmp_path / "pytest.ini"), str(tmp_path / "test_sample.py")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


SKIPPING = "import pytest\n\ndef test_runs():\n    pass\n\ndef test_needs_chromium():\n    pytest.skip('no chromium')\n"


def test_under_ci_a_skipped_test_fails_the_run(tmp_path):
    done = _pytest(tmp_path, SKIPPING, ci="true")
    assert done.returncode == 1, done.stdout
    assert "CI=true: 1 skipped" in done.stdout and "test_needs_chromium: " in done.stdout


def test_outside_ci_a_skip_is_only_reported(tmp_path):
    assert _pytest(tmp_path, SKIPPING, ci=None).returncode == 0


def test_under_ci_a_run_without_skips_passes(tmp_path):
    assert _pytest(tmp_path, "def test_runs():\n    pass\n", ci="true").returncode == 0
