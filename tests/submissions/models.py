"""Tiny models and hostile files for submission tests (all generated in the test's tmp dir)."""

from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn


class Marker:
    """Unpickling this creates ``path``: proof that a pickle was (or was not) loaded."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def evil_pickle(path: Path, marker: Path, protocol: int = 2) -> Path:
    path.write_bytes(pickle.dumps(Marker(marker), protocol=protocol))
    return path


def evil_torch_save(path: Path, marker: Path) -> Path:
    torch.save({"weight": torch.zeros(2), "x": Marker(marker)}, path)
    return path


class Threshold(nn.Module):
    """Instance 'segmentation': every pixel of channel 0 above 0.5 is object 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, 0] > 0.5).to(torch.int64)


class ThresholdScored(nn.Module):
    """As :class:`Threshold`, plus a confidence output for label 1."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        labels = (x[:, 0] > 0.5).to(torch.int64)
        return labels, torch.full((1, 1), 0.75)


class Classifier(nn.Module):
    """Logits = per-channel means times fixed weights (3 classes)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([[1.0, -1.0], [0.5, 0.5], [-1.0, 1.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) @ self.weight.T


def script(module: nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(module), str(path))
    return path


class SaveOnLoad(nn.Module):
    """A TorchScript module whose ``__setstate__`` writes a file while ``torch.jit.load`` runs."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return (self.target, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        torch.save(torch.zeros(1), state[0])
        self.target = state[0]
        self.training = state[1]


class ReadFile(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.from_file("/etc/hostname", size=1, dtype=torch.uint8)
        return x + y.sum()


def traversal_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("model/data.pkl", b"\x80\x02N.")
        zf.writestr("model/code/__torch__.py", "")
        zf.writestr("../../escaped.txt", b"owned")
        zf.writestr("/etc/cron.d/evil", b"owned")
    return path


def fake_torchscript_with_pickle(path: Path, marker: Path, protocol: int) -> Path:
    """A zip with the TorchScript layout whose data.pkl carries a hostile __reduce__."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("model/data.pkl", pickle.dumps(Marker(marker), protocol=protocol))
        zf.writestr("model/constants.pkl", pickle.dumps((), protocol=2))
        zf.writestr("model/code/__torch__.py", "class M(Module):\n  pass\n")
        zf.writestr("model/version", "3")
    return path


def onnx_threshold(path: Path, input_shape=(1, 1, "y", "x")) -> Path:
    """ONNX: label = (x[:, 0] > 0.5) as int64, output (1, Y, X)."""
    import onnx
    from onnx import TensorProto, helper

    half = helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])
    nodes = [
        helper.make_node("Greater", ["image", "half"], ["mask"]),
        helper.make_node("Cast", ["mask"], ["labels4"], to=TensorProto.INT64),
        helper.make_node("Squeeze", ["labels4", "axis1"], ["labels"]),
    ]
    axis1 = helper.make_tensor("axis1", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(
        nodes,
        "threshold",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("labels", TensorProto.INT64, [1, "y", "x"])],
        initializer=[half, axis1],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def onnx_huge_intermediate(path: Path) -> Path:
    """ONNX with a dynamic input whose graph builds a 40 GB tensor (ConstantOfShape)."""
    import onnx
    from onnx import TensorProto, helper

    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [100_000, 100_000])
    nodes = [
        helper.make_node(
            "ConstantOfShape",
            ["shape"],
            ["big"],
            value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0]),
        ),
        helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
        helper.make_node("Add", ["image", "total"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "huge",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, "y", "x"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 1, "y", "x"])],
        initializer=[shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def onnx_declared(path: Path, dims, *, domain: str = "", external: str | None = None) -> Path:
    """An identity ONNX model with the given declared input/output dims."""
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["image"], ["out"], domain=domain)
    inits = []
    if external is not None:
        t = helper.make_tensor("w", TensorProto.FLOAT, [1], [0.0])
        t.ClearField("float_data")
        t.data_location = TensorProto.EXTERNAL
        entry = t.external_data.add()
        entry.key, entry.value = "location", external
        inits.append(t)
    graph = helper.make_graph(
        [node],
        "declared",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, list(dims))],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, list(dims))],
        initializer=inits,
    )
    opsets = [helper.make_opsetid("", 17)]
    if domain:
        opsets.append(helper.make_opsetid(domain, 1))
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def percentile_normalised(image: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """Independent reference of the percentile normalisation (per channel, float64)."""
    x = image.astype(np.float64)
    out = np.empty_like(x)
    for c in range(x.shape[0]):
        lo, hi = np.percentile(x[c], [low, high])
        out[c] = (x[c] - lo) / ((hi - lo) or 1.0)
    return out


def submit_in_process(manifest_path: str, root: str, home: str, barrier) -> str:
    """Run a full submission in a worker process (concurrency tests); returns the entry path."""
    import os

    os.environ["CELLBENCH_HOME"] = home
    from cellbench.submissions import submit

    barrier.wait()
    return str(submit(manifest_path, root=root, n_bootstrap=20).entry_path)


def _register_mean_classifier() -> None:
    """Register ``test-mean-classifier`` (at import, so a sandboxed run that imports this
    module as a plugin knows it too)."""
    from dataclasses import dataclass

    from cellbench.training.baseline import _REGISTRY, Baseline, BaselineConfig, DataSpec, register

    if "test-mean-classifier" in _REGISTRY:
        return

    @dataclass
    class MeanConfig(BaselineConfig):
        pass

    @register
    class MeanClassifier(Baseline):
        name = "test-mean-classifier"
        tasks = ("classification",)
        config_class = MeanConfig
        sample_mode = "image"

        def __init__(self, config: MeanConfig, spec: DataSpec) -> None:
            super().__init__(config, spec)
            self.head = Classifier()

        def loss(self, batch):
            logits = self.head(batch["image"])
            loss = nn.functional.cross_entropy(logits, batch["label"])
            return loss, {"ce": float(loss)}

        @torch.no_grad()
        def predict(self, image):
            logits = self.head(image)[0]
            return {"label": int(logits.argmax()), "scores": logits.softmax(0).cpu().numpy()}


_register_mean_classifier()


def linear_classifier_package(folder: Path, dataset: str) -> Path:
    """A safetensors model package of a tiny registered classification baseline.

    The baseline (``test-mean-classifier``) computes per-channel means of the normalised input
    and applies the fixed 3x2 weights of :class:`Classifier`, so its predictions can be
    checked against a NumPy reference.
    """
    from cellbench.training.baseline import _REGISTRY, DataSpec
    from cellbench.training.normalisation import Normaliser
    from cellbench.training.package import InferenceSettings, write_package

    cls = _REGISTRY["test-mean-classifier"]
    spec = DataSpec(task="classification", in_channels=2, class_names=("a", "b", "c"))
    model = cls(cls.config_class(), spec)
    settings = InferenceSettings(sample_mode="image")
    folder.mkdir(parents=True, exist_ok=True)
    write_package(
        folder,
        model,
        normaliser=Normaliser(mode="percentile"),
        settings=settings,
        dataset=dataset,
    )
    return folder


#: Spellings of ``torch.save(`` that TorchScript accepts and a regex scan misses (issue 15).
HIDDEN_SAVE_SPELLINGS = {
    "space-after-dot": "torch. save(",
    "space-before-dot": "torch .save(",
    "line-continuation": "torch.\\\n      save(",
    "ops-aten": "ops . aten . save(",
}


def respelled_save_on_load(folder: Path, target: Path, spelling: str) -> Path:
    """A :class:`SaveOnLoad` archive whose ``torch.save(`` is rewritten as ``spelling``."""
    base = script(SaveOnLoad(str(target)), folder / "base.pt")
    out = folder / "respelled.pt"
    with zipfile.ZipFile(base) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith(".py"):
                data = data.replace(b"torch.save(", spelling.encode())
            zout.writestr(info, data)
    base.unlink()
    return out


class Spin(nn.Module):
    """Never returns: a runaway model."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        while bool(y.sum() > -1.0):
            y = y + 1.0
        return y


class Hog(nn.Module):
    """Allocates about 6 GB for its first sample."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        big = torch.ones(1500, 1024, 1024)
        return (x[:, 0] > 0.5).to(torch.int64) + big.sum().to(torch.int64) * 0
