"""Helpers the tests share: synthetic matrices and checkpoints, and driving the app."""
import numpy as np
import torch
from safetensors.torch import save_file


def planted(m, n, thetas, sigma=1.0, seed=0):
    """W = σ√N Σ θ_k a_k b_kᵀ + E (E i.i.d. N(0, σ²)); returns W, A (m×r), B (n×r)."""
    rng = np.random.default_rng(seed)
    r = len(thetas)
    A = np.linalg.qr(rng.standard_normal((m, r)))[0]
    B = np.linalg.qr(rng.standard_normal((n, r)))[0]
    N = max(m, n)
    W = sigma * np.sqrt(N) * (A * np.asarray(thetas)) @ B.T + sigma * rng.standard_normal((m, n))
    return W, A, B


async def settle(app, pilot, rounds: int = 1):
    """Let the app's workers finish; more rounds when a finished job starts the next one."""
    for _ in range(rounds):
        await pilot.pause()
        await app.workers.wait_for_complete()
    await pilot.pause()


def rendered(renderable, width: int = 200) -> str:
    """A Rich renderable as plain text, as it would print."""
    import io

    from rich.console import Console

    console = Console(width=width, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def panel_text(app) -> str:
    from rmt_tui.panel import ResultsPanel

    return rendered(app.query_one(ResultsPanel).content)


def finetune_pair(tmp_path):
    """A base and a tuned copy (bf16): layer 0 got a rank-6 update, layer 1 none; the tuned
    model has an extra head the base lacks."""
    rng = np.random.default_rng(2)
    base, tuned = {}, {}
    for i, r in enumerate((6, 0)):
        w = (rng.standard_normal((256, 384)) / np.sqrt(384)).astype(np.float32)
        u, v = np.linalg.qr(rng.standard_normal((256, 6)))[0], np.linalg.qr(rng.standard_normal((384, 6)))[0]
        d = ((u[:, :r] * np.linspace(2, 1, r) * 0.05) @ v[:, :r].T).astype(np.float32)
        base[f"blocks.{i}.weight"] = torch.from_numpy(w).to(torch.bfloat16)
        tuned[f"blocks.{i}.weight"] = torch.from_numpy(w + d).to(torch.bfloat16)
    tuned["head.weight"] = torch.randn(10, 384).to(torch.bfloat16)
    save_file(base, str(tmp_path / "base.safetensors"))
    save_file(tuned, str(tmp_path / "tuned.safetensors"))
    return tmp_path / "base.safetensors", tmp_path / "tuned.safetensors"


def model_state(seed=0, dtype=torch.float32):
    """A small model of every kind of tensor: embedding, linears in depth order 2 < 10, a conv, a bias, ints."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in [("embed.weight", (100, 48)), ("layers.2.fc.weight", (64, 48)), ("layers.2.fc.bias", (64,)),
                        ("layers.10.fc.weight", (40, 64)), ("conv.weight", (32, 3, 3, 3)), ("head.weight", (10, 40))]:
        sd[name] = torch.randn(shape, generator=g).to(dtype)
    sd["steps"] = torch.tensor([1, 2, 3])
    return sd


def names(ckpt):
    return [l.name for l in ckpt.layers]
