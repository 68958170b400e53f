"""What the server serves and accepts: only Gradio's upload and cache folders over HTTP (the
checkpoint is blocked even where an operator allows its folder), uploads within the size
limit, file names that stay in their folders, imported JSON limited before parsing, and
server paths a client names but never uploaded refused. (Checkpoints that would run code
when unpickled: tests/test_checkpoints.py and tests/test_bad_input.py.)"""

import json
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import IMAGES, LABELME_COCO
from gradio import utils as gradio_utils
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from annotator.formats.filenames import safe_name, safe_stem
from annotator.limits import Limits
from annotator.testing import free_port

ROOT = Path(__file__).resolve().parents[2]
MESSAGE, TABLE = 2, 4
LIMITS = Limits(max_upload_mb=0.05, max_json_mb=2 / 1024)  # 51 KB uploads, 2 KB JSON


@pytest.fixture(scope="module")
def served(tiny_checkpoint, tmp_path_factory):
    """The app launched as ``annotator serve`` launches it, with the checkpoint's folder
    allowed by the operator (GRADIO_ALLOWED_PATHS): the checkpoint itself and the projects
    folder inside it must stay blocked."""
    from annotator.app.ui import build_app, launch_kwargs
    from annotator.models.loading import load_segmenter

    public = tiny_checkpoint.parent / "public.txt"
    public.write_text("an operator shares this folder")
    projects = tiny_checkpoint.parent / "projects"
    projects.mkdir(exist_ok=True)
    (projects / "secret.annotator").write_text("[project] masks of a private project")
    segmenter, info = load_segmenter("tiny", str(tiny_checkpoint), device="cpu")
    demo = build_app(segmenter, info, limits=LIMITS, projects_dir=projects)
    port = free_port()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_ALLOWED_PATHS", str(tiny_checkpoint.parent))
        demo.launch(
            server_name="127.0.0.1",
            server_port=port,
            prevent_thread_lock=True,
            quiet=True,
            **launch_kwargs(LIMITS, info, private=[projects]),
        )
    small = tmp_path_factory.mktemp("img") / "small.png"
    Image.open(IMAGES / "dog.jpg").resize((200, 134)).save(small)
    yield demo, f"http://127.0.0.1:{port}", public, tiny_checkpoint, small
    demo.close()


def get_file(base: str, path) -> httpx.Response:
    return httpx.get(f"{base}/gradio_api/file={path}")


def upload(base: str, name: str, data: bytes) -> httpx.Response:
    return httpx.post(f"{base}/gradio_api/upload", files={"files": (name, data, "application/octet-stream")})


# -- what is served ------------------------------------------------------------------------------
def test_only_uploads_and_gradios_cache_are_served(served, tmp_path):
    demo, base, public, checkpoint, small = served
    # control: an uploaded file is served, and so is the folder the operator allowed
    (uploaded,) = upload(base, "small.png", small.read_bytes()).json()
    assert get_file(base, uploaded).content == small.read_bytes()
    assert get_file(base, public).status_code == 200
    cache = Path(uploaded).parent
    refused = [
        "/etc/passwd",
        ROOT / "README.md",
        ROOT / "annotator" / "ui.py",
        ROOT / "pyproject.toml",
        checkpoint,
        checkpoint.parent / "projects" / "secret.annotator",
        demo.workbench.export_root,
        IMAGES / "dog.jpg",
        LABELME_COCO / "annotations.json",
        f"{cache}/../../../etc/passwd",
        f"{cache}/..%2F..%2F..%2Fetc%2Fpasswd",
        "file:///etc/passwd",
    ]
    for path in refused:
        r = get_file(base, path)
        assert r.status_code in (403, 404), (path, r.status_code)
        assert b"root:" not in r.content and b"[project]" not in r.content, path


def test_an_export_is_served_from_gradios_cache_not_from_where_it_was_written(served):
    demo, base, *_, small = served
    c = Client(base + "/", verbose=False)
    c.predict(handle_file(str(small)), api_name="/upload")
    c.predict(100, 60, "positive", api_name="/click")
    c.predict("dog", api_name="/accept")
    files = c.predict("rle", True, False, api_name="/export_coco")[-2]  # then the download button
    written = list(demo.workbench.export_root.rglob("*_coco.json"))
    assert written and any(Path(f).name == "small_coco.json" for f in files)
    assert all(get_file(base, w).status_code == 403 for w in written)


# -- what is accepted ----------------------------------------------------------------------------
def test_uploads_over_the_size_limit_are_refused_and_the_app_keeps_serving(served, tmp_path):
    _, base, *_, small = served
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8)).save(big)
    assert big.stat().st_size > LIMITS.upload_bytes > small.stat().st_size
    r = upload(base, "big.png", big.read_bytes())
    assert r.status_code == 413 and "maximum allowed size of 52428 bytes" in r.text
    c = Client(base + "/", verbose=False)
    with pytest.raises(ValueError, match="exceeds the maximum file size of 52428 bytes"):
        c.predict(handle_file(str(big)), api_name="/upload")
    assert "small.png 200x134" in c.predict(handle_file(str(small)), api_name="/upload")[1]


def test_imported_json_over_the_limit_is_a_message_and_the_masks_stay(served, tmp_path):
    _, base, *_, small = served
    c = Client(base + "/", verbose=False)
    c.predict(handle_file(str(small)), api_name="/upload")
    c.predict(100, 60, "positive", api_name="/click")
    table = c.predict("dog", api_name="/accept")[TABLE]
    big = tmp_path / "small.json"
    big.write_text(json.dumps({"images": [], "annotations": [], "padding": "x" * 4000}))
    with pytest.raises(AppError, match=r"the file is 3.9\d? KB; imported JSON may be at most 2 KB"):
        c.predict(handle_file(str(big)), api_name="/import_annotations")
    assert c.predict(api_name="/masks") == table


@pytest.mark.parametrize(
    "name, stored",
    [
        ("../../../tmp/evil.png", "evil.png"),
        ("/etc/cron.d/evil.png", "evil.png"),
        ("a/../../b.png", "b.png"),
        ("é" * 120 + ".png", None),
        ("日本語の写真.png", "日本語の写真.png"),
        ("a\x00b.png", None),
    ],
)
def test_uploaded_names_stay_in_the_upload_folder(served, name, stored):
    _, base, *_, small = served
    r = upload(base, name, small.read_bytes())
    assert r.status_code == 200, r.text
    (path,) = r.json()
    path = Path(path)
    assert path.resolve().is_relative_to(Path(gradio_utils.get_upload_folder()).resolve())
    assert path.is_file() and "\x00" not in str(path) and len(path.name.encode()) <= 255
    if stored is not None:
        assert path.name == stored


def test_server_paths_a_client_never_uploaded_are_refused(served):
    demo, base, *_ = served
    for api, path in (
        ("upload", IMAGES / "dog.jpg"),
        ("upload", "/etc/passwd"),
        ("import_annotations", LABELME_COCO / "annotations.json"),
    ):
        r = httpx.post(
            f"{base}/gradio_api/call/{api}", json={"data": [{"path": str(path), "meta": {"_type": "gradio.FileData"}}]}
        )
        assert r.status_code == 200
        events = httpx.get(f"{base}/gradio_api/call/{api}/{r.json()['event_id']}", timeout=60).text
        assert "event: error" in events and "event: complete" not in events, (api, path, events)
    names = [demo.workbench.sessions.peek(k).name for k in demo.workbench.sessions.keys()]
    assert "passwd" not in names


# -- file names the app writes -------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, expected",
    [
        ("dog.jpg", "dog.jpg"),
        ("../../etc/passwd", "passwd"),
        ("/abs/dir/photo.png", "photo.png"),
        ("C:\\Users\\me\\..\\photo.png", "photo.png"),
        ("a\x00b\x1f.png", "a_b_.png"),
        ("..", "image"),
        ("...hidden.png", "hidden.png"),
        ("   ", "image"),
        ("what?<is>:this|*.png", "what__is__this__.png"),
        ("日本語の写真.jpg", "日本語の写真.jpg"),
        ("e\u0301t\u00e9.png", "\u00e9t\u00e9.png"),  # NFC: one form of the same letters
    ],
)
def test_safe_name(name, expected):
    assert safe_name(name) == expected


def test_safe_name_bounds_long_names_without_splitting_characters():
    name = safe_name("写" * 300 + ".tiff")
    assert name.endswith("写.tiff") and len(name.encode()) <= 180
    assert safe_stem("x" * 1000 + ".png") == "x" * 176
    assert safe_stem("archive.tar.gz") == "archive.tar" and safe_stem("..") == "image"


@pytest.mark.parametrize(
    "name",
    [
        "../../../../tmp/escaped.png",
        "/etc/evil.png",
        "a\x00b.png",
        "é" * 300 + ".png",
        "..",
        "sub/dir/name.png",
        "日本語.png",
        "CON?.png",
    ],
)
def test_exported_files_never_leave_their_folder(tiny_checkpoint, name, tmp_path):
    from annotator.app.workbench import Workbench
    from annotator.models.loading import load_segmenter

    wb = Workbench(*load_segmenter("tiny", str(tiny_checkpoint), device="cpu"))
    sid = uuid.uuid4().hex
    image = np.zeros((40, 60, 3), np.uint8)
    wb.load(sid, image, name)
    m = np.zeros((40, 60), bool)
    m[5:20, 10:30] = True
    wb.session(sid).doc.add(m, label="../label")
    out = wb.export(sid, "rle", figures=True)
    folder = out.coco.parent.resolve()
    assert folder.parent == wb.export_root.resolve()
    for f in out.files:
        assert f.resolve().parent == folder and f.is_file(), f
        assert "\x00" not in f.name and len(f.name.encode()) <= 255
    assert sorted(p.name for p in folder.iterdir()) == sorted(f.name for f in out.files)
    assert not Path("/tmp/escaped_coco.json").exists()
    data = json.loads(out.coco.read_text())
    assert data["images"][0]["file_name"] == safe_name(name)
