"""Shared fixtures: real photos from ../shared/data and small seeded random SAM models."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pytest

from annotator.formats.images import load_image
from annotator.testing import write_random_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ANNOTATOR_SHARED_DATA", ROOT.parent / "shared" / "data"))
IMAGES = SHARED_DATA / "images"
LABELME_COCO = SHARED_DATA / "labelme_coco"


def shared_image(name: str) -> np.ndarray:
    path = IMAGES / name
    if not path.is_file():
        pytest.fail(f"test data missing: {path} (../shared/data must sit beside the checkout)")
    return load_image(path)


@pytest.fixture(scope="session")
def truck() -> np.ndarray:
    return shared_image("truck.jpg")


@pytest.fixture(scope="session")
def dog() -> np.ndarray:
    return shared_image("dog.jpg")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A seeded random tiny-SAM checkpoint file, written once per test session."""
    return write_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "sam_tiny.pth", "tiny", seed=0)


@pytest.fixture(scope="module")
def wb(tiny_checkpoint):
    """A Workbench (the app's logic) on the tiny random SAM, shared by a test module."""
    from annotator.models.loading import load_segmenter
    from annotator.app.workbench import Workbench

    segmenter, info = load_segmenter("tiny", str(tiny_checkpoint), device="cpu")
    return Workbench(segmenter, info)


@pytest.fixture
def sid() -> str:
    """A fresh session id."""
    return uuid.uuid4().hex
