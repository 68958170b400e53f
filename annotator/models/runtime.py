"""Where SAM's image encoder runs: PyTorch, ONNX Runtime or OpenVINO.

``torch`` runs the model as built (any device). ``onnx`` and ``openvino`` run the exported
encoder (``annotator.models.export``) on the CPU; it computes the same embedding (the parity
tests hold it to the official PyTorch model) in less time on a CPU. ``default_runtime``
picks ONNX Runtime on a CPU when it is installed, PyTorch elsewhere.

The prompt decoder runs in PyTorch whatever the runtime: ``EmbeddingDecoder``
(``annotator.models.modeling.mask_decoder``) shares each image's work across its prompts and
was faster than either exported decoder (a click on random vit_t, 2-core CPU: 70 ms against
100 ms on ONNX Runtime and 119 ms on OpenVINO).
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import torch
from segment_anything.modeling import Sam

from annotator.models.device import RUNTIMES
from annotator.models.export import ExportCache

__all__ = ["RUNTIMES", "ExportedSam", "available", "check_runtime", "default_runtime"]
RUNTIME_ENV = "ANNOTATOR_RUNTIME"
# encoder precisions the exported runtimes offer (the decoder is fp32 in PyTorch)
EXPORTED_PRECISIONS = ("fp32", "int8")
_PACKAGES = {"onnx": "onnxruntime", "openvino": "openvino"}


def available(runtime: str) -> bool:
    if runtime == "torch":
        return True
    return importlib.util.find_spec(_PACKAGES[runtime]) is not None


def default_runtime(device) -> str:
    """``ANNOTATOR_RUNTIME`` if set; else ONNX Runtime on a CPU (when installed), PyTorch on
    GPUs and where it is not."""
    env = os.environ.get(RUNTIME_ENV)
    if env:
        return check_runtime(env, device)
    if torch.device(device).type == "cpu" and available("onnx"):
        return "onnx"
    return "torch"


def check_runtime(runtime: str, device) -> str:
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if runtime != "torch":
        if torch.device(device).type != "cpu":
            raise ValueError(f"the {runtime} runtime runs on the CPU; use --runtime torch on {device}")
        if not available(runtime):
            raise ValueError(
                f"--runtime {runtime} needs the {_PACKAGES[runtime]} package "
                f"(pip install {_PACKAGES[runtime]}), or use --runtime torch"
            )
    return runtime


def _threads(threads: int | None) -> int:
    return threads or torch.get_num_threads()


class _OrtGraph:
    def __init__(self, path, threads: int):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        # ORT's memory arena keeps the largest buffers of a call for the next one: for the
        # image encoder that held ~3 GB more at peak after two images (vit_b: 7942 vs 4809
        # MiB), for no speed gain (19-20 s either way)
        opts.enable_cpu_mem_arena = False
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # threads sleep when idle instead of spinning: on a shared CPU spinning threads take
        # cores from everything else (the same reason serve sets OMP_WAIT_POLICY=PASSIVE)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def __call__(self, **feeds) -> list[np.ndarray]:
        return self.session.run(None, feeds)


class _OpenVinoGraph:
    def __init__(self, path, threads: int):
        import openvino as ov

        core = ov.Core()
        config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        self.model = core.compile_model(str(path), "CPU", config)
        self.outputs = self.model.outputs

    def __call__(self, **feeds) -> list[np.ndarray]:
        # a fresh infer request per call: calls may come from several threads
        result = self.model.create_infer_request().infer(feeds)
        return [np.asarray(result[o]) for o in self.outputs]


_GRAPHS = {"onnx": _OrtGraph, "openvino": _OpenVinoGraph}


class ExportedSam:
    """One SAM's image encoder, exported and opened on a CPU runtime."""

    def __init__(
        self,
        model: Sam,
        runtime: str = "onnx",
        *,
        precision: str = "fp32",
        cache_root: str | os.PathLike | None = None,
        threads: int | None = None,
        progress: bool = True,
    ):
        check_runtime(runtime, "cpu")
        if precision not in EXPORTED_PRECISIONS:
            raise ValueError(
                f"the {runtime} runtime runs the encoder in {' or '.join(EXPORTED_PRECISIONS)}, not {precision!r}"
            )
        self.runtime = runtime
        self.precision = precision
        self.cache = ExportCache(model, cache_root)
        encoder_part = "encoder" if precision == "fp32" else "encoder-int8"
        paths = self.cache.ensure([encoder_part], progress=progress)
        self._encoder = _GRAPHS[runtime](paths[encoder_part], _threads(threads))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(1, 3, 1024, 1024) preprocessed image -> (1, 256, 64, 64) features."""
        (features,) = self._encoder(image=x.detach().cpu().float().numpy())
        return torch.from_numpy(np.ascontiguousarray(features))
