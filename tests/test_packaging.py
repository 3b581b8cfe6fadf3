"""Installed like any other package: the wheel carries prompts, demo articles and UI, and `rag` works
from an empty folder in a fresh virtual environment (no editable install, no repository on the path)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow
SOURCES = ["pyproject.toml", "README.md", "rag", "prompts", "data/articles"]
QUESTION = "When did Cambodia and Pakistan establish diplomatic relations?"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of the sources, so the build leaves nothing behind in the repository."""
    work = tmp_path_factory.mktemp("wheel")
    for name in SOURCES:
        source, target = REPO / name, work / "src" / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", "-w", str(work / "dist"), str(work / "src")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    [built] = (work / "dist").glob("*.whl")
    return built


def test_the_wheel_carries_every_module_and_the_package_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "rag").rglob("*.py")}
    assert modules <= names, sorted(modules - names)  # a new package must be listed in pyproject.toml
    data = {f"rag/_data/prompts/{p.name}" for p in (REPO / "prompts").glob("*.txt")} | \
        {f"rag/_data/articles/{p.name}" for p in (REPO / "data" / "articles").glob("*.md")} | \
        {"rag/serve/static/index.html", "rag/serve/static/app.js", "rag/serve/static/style.css"}
    assert data <= names, sorted(data - names)
    assert wheel.name.startswith("grounded_news_qa-")
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "rag = rag.cli:app" in zipfile.ZipFile(wheel).read(entry_points).decode()


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv with only the wheel installed; the dependencies are borrowed from this environment
    through a .pth line (added after installing, so pip never sees the editable install)."""
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=300)
    python = root / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return root


def test_rag_ingests_and_answers_from_an_empty_folder(venv, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "PYTHON"))}
    env.update(HF_HUB_OFFLINE="1", PATH=f"{venv / 'bin'}:{env.get('PATH', '')}")

    def rag(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(venv / "bin" / "rag"), *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=600)

    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import rag; print(rag.__file__)"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(venv)  # the installed copy, not the repository's
    ingested = rag("ingest")
    assert ingested.returncode == 0, ingested.stderr[-3000:]
    assert "2 added" in ingested.stdout
    assert (tmp_path / "index" / "default" / "CURRENT").is_file()  # under the working directory
    asked = rag("ask", QUESTION, "--json")
    assert asked.returncode == 0, asked.stderr[-3000:]
    answer = json.loads(asked.stdout)
    assert answer["abstained"] is False and "1952" in answer["answer"] and answer["citations"]
    assert all(f"[{c['n']}]" in answer["answer"] for c in answer["citations"])
    articles = {p.stem: p.read_text(encoding="utf-8") for p in (Path(where).parent / "_data" / "articles").glob("*.md")}
    assert all(c["text"] in articles[c["doc_id"]] for c in answer["citations"])
    assert not list(Path(where).parent.rglob("CURRENT"))  # nothing written into site-packages
