"""What a real ``python -m annotator serve`` process refuses to serve over HTTP, even where the
operator allows the parent folders (GRADIO_ALLOWED_PATHS): the checkpoint cache, the
projects folder as ``serve`` sets it up (the default one, created by opening a project),
and the checkpoint. A file in an allowed folder next to them is served: the control that
shows the refusals come from the app's blocking, not from Gradio refusing everything."""

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx
import pytest
from gradio_client import Client

from annotator.testing import free_port

ROOT = Path(__file__).resolve().parents[2]


def _wait_up(proc: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url + "config", timeout=2).read()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("app did not start:\n" + proc.stdout.read())
            time.sleep(0.3)


@pytest.fixture(scope="module")
def served(tiny_checkpoint, tmp_path_factory):
    top = tmp_path_factory.mktemp("served")
    cache, data = top / "cache", top / "data"
    cache.mkdir()
    cached = cache / "sam_vit_b_01ec64.pth"
    cached.write_bytes(b"[cache] a downloaded checkpoint")
    public = [top / "public.txt", tiny_checkpoint.parent / "beside-the-checkpoint.txt"]
    for path in public:
        path.write_text("an operator shares this folder")
    env = {k: v for k, v in os.environ.items() if k not in ("ANNOTATOR_PROJECTS_DIR", "GRADIO_SERVER_PORT")}
    env.update(
        GRADIO_ANALYTICS_ENABLED="False",
        ANNOTATOR_CACHE=str(cache),
        XDG_DATA_HOME=str(data),
        GRADIO_ALLOWED_PATHS=f"{top},{tiny_checkpoint.parent}",
    )  # comma-separated
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "annotator",
            "serve",
            "--model",
            "tiny",
            "--checkpoint",
            str(tiny_checkpoint),
            "--device",
            "cpu",
            "--port",
            str(port),
        ],  # no --projects-dir: the default folder
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_up(proc, url)
        Client(url, verbose=False).predict("secret", api_name="/open_project")
        project = data / "annotator" / "projects" / "secret.annotator"
        assert project.is_file(), "serve did not put the project in the default projects folder"
        yield url, {"cache": cached, "project": project, "checkpoint": tiny_checkpoint}, public
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def get_file(url: str, path) -> httpx.Response:
    return httpx.get(f"{url}gradio_api/file={path}")


def test_the_allowed_folders_are_served(served):
    url, _, public = served
    for path in public:
        r = get_file(url, path)
        assert r.status_code == 200 and r.text == "an operator shares this folder", path


@pytest.mark.parametrize("what", ["cache", "project", "checkpoint"])
def test_blocked_files_are_refused_inside_allowed_folders(served, what):
    url, files, _ = served
    path = files[what]
    secret = path.read_bytes()[:64]
    for asked in (path, path.parent / "." / path.name, f"{path.parent}/../{path.parent.name}/{path.name}"):
        r = get_file(url, asked)
        assert r.status_code in (403, 404), (what, asked, r.status_code)
        assert secret not in r.content
