"""Optional dependency groups (``pip install cellbench[EXTRA]``) and the message for a missing one.

``pip install cellbench`` installs the core: pulling, reading, verifying and scoring datasets and
rendering leaderboards, with no torch, onnxruntime or Hugging Face ``datasets``. The rest comes
as extras (declared in ``pyproject.toml``):

=========  ======================================================  ==============================
extra      brings                                                  for
=========  ======================================================  ==============================
``train``  torch, torchvision, safetensors                         training, ``predict``,
                                                                   TorchScript/safetensors models
``models`` onnxruntime, onnx                                       ONNX model submissions
``hf``     datasets, huggingface-hub                               Hugging Face export and import
``s3``     s3fs                                                    ``s3://`` sources and roots
``czi``    pylibCZIrw (LGPL-3.0)                                   Zeiss CZI (Allen label-free)
``all``    all of the above
=========  ======================================================  ==============================
"""

from __future__ import annotations

from cellbench.errors import CellbenchError

#: Top-level module -> the extra that installs it.
EXTRA_OF: dict[str, str] = {
    "torch": "train",
    "torchvision": "train",
    "safetensors": "train",
    "onnxruntime": "models",
    "onnx": "models",
    "datasets": "hf",
    "pyarrow": "hf",
    "huggingface_hub": "hf",
    "s3fs": "s3",
    "pylibCZIrw": "czi",
}


class MissingExtraError(CellbenchError):
    """A feature needs a package of an extra that is not installed."""


def missing_extra(err: ImportError, what: str = "this") -> MissingExtraError | None:
    """The one-line error for an import that an extra would satisfy, or None for any other.

    Args:
        err: The ``ImportError`` raised by the import.
        what: What needed it (a command or feature), for the message.
    """
    name = (getattr(err, "name", None) or "").split(".")[0]
    extra = EXTRA_OF.get(name)
    if extra is None:
        return None
    return MissingExtraError(
        f"{what} needs {name}, which the core install leaves out: pip install 'cellbench[{extra}]'"
    )
