"""The app as a Hugging Face Space starts it: requirements.txt alone, then ``python app.py``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

from annotator.testing import free_port

ROOT = Path(__file__).resolve().parents[1]
# what a Space repository holds of this project (tests, benchmarks and docs are not needed to run)
SPACE_FILES = ["app.py", "requirements.txt", "pyproject.toml", "README.md", "annotator"]


def requirements_lines() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_requirements_pin_exactly_what_pyproject_pins():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = requirements_lines()
    assert "." in lines, "requirements.txt must install the package itself"

    def pins(specs):
        reqs = [Requirement(s) for s in specs]
        return {r.name.lower().replace("_", "-"): str(r.specifier) for r in reqs}

    assert pins(line for line in lines if line != ".") == pins(pyproject)


@pytest.mark.slow
def test_a_fresh_venv_from_requirements_serves_the_app(tmp_path, tiny_checkpoint):
    """What a Space does: a new virtual environment, ``pip install -r requirements.txt`` in a
    copy of the repository, ``python app.py`` with GRADIO_SERVER_NAME/PORT set; the page is
    served. (Minutes: it installs torch; pip's cache or a local index makes that local.)"""
    space = tmp_path / "space"
    space.mkdir()
    for name in SPACE_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, space / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, space / name)
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
        python = venv / "bin" / "python"
        install = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-r", "requirements.txt"],
            cwd=space,
            env=env,
            capture_output=True,
            text=True,
        )
        assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
        port = free_port()
        env.update(
            GRADIO_SERVER_NAME="0.0.0.0",
            GRADIO_SERVER_PORT=str(port),
            ANNOTATOR_MODEL="tiny",
            ANNOTATOR_CHECKPOINT=str(tiny_checkpoint),
            ANNOTATOR_DEVICE="cpu",
            ANNOTATOR_CACHE=str(tmp_path / "cache"),
            ANNOTATOR_PROJECTS_DIR=str(tmp_path / "projects"),
            HOME=str(tmp_path / "home"),
        )
        log = (tmp_path / "app.log").open("w")
        app = subprocess.Popen([str(python), "app.py"], cwd=space, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            page = wait_for_page(f"http://127.0.0.1:{port}/", app, timeout_s=300)
        finally:
            app.terminate()
            app.wait(30)
            log.close()
        server_log = (tmp_path / "app.log").read_text()
        assert page is not None, f"the Space never served its page; its log:\n{server_log[-4000:]}"
        assert "gradio_config" in page and "annotator" in page
        assert "SAM tiny" in server_log and "Traceback" not in server_log
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # gigabytes (torch); the rest is small


def wait_for_page(url: str, process: subprocess.Popen, timeout_s: float) -> str | None:
    """The page at ``url`` once the server answers, or None if it exits or never does."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                if response.status == 200:
                    return response.read().decode("utf-8", "replace")
        except OSError:
            time.sleep(1)
    return None
