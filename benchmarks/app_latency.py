"""How fast the app shows a big checkpoint's tree, and how quickly it answers keys while a full
analysis runs, measured in a real terminal (tmux), as a user would see it.

    python benchmarks/app_latency.py         # builds a ~1.2 GB safetensors file in a temp folder; needs tmux

Prints: the time from launching `rmt-tui FILE` to the layer tree on screen (target < 1 s: only the
header is read), beside the time to merely read the file once (what reading tensors up front would
cost); and the latency of the `v` key (cycle the plot view: the plot's title changes) idle and
while `analyse all` runs (target < 100 ms), as median and worst of 9 presses each, 0.15 s apart.
"""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TITLES = ["sorted singular values", "no sweep for this layer", "histogram of s"]  # after 1, 2, 3 presses of v


def build(path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    state = {}  # 24 blocks of 4096×2048 + 2048×2048 float32 (+ a norm vector) ≈ 1.2 GB
    for i in range(24):
        state[f"model.layers.{i}.mlp.up_proj.weight"] = torch.randn(4096, 2048, generator=g)
        state[f"model.layers.{i}.self_attn.o_proj.weight"] = torch.randn(2048, 2048, generator=g)
        state[f"model.layers.{i}.input_layernorm.weight"] = torch.ones(2048)
    save_file(state, str(path))


class Terminal:
    def __init__(self, command: str, env: dict[str, str]):
        self.name = f"rmt-bench-{os.getpid()}"
        exports = " ".join(f"{k}={v}" for k, v in env.items())
        subprocess.run(["tmux", "new-session", "-d", "-s", self.name, "-x", "120", "-y", "40",
                        f"env {exports} {command}"], check=True)

    def screen(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True, text=True).stdout

    def wait_for(self, text: str, limit: float = 30.0) -> float:
        t = time.perf_counter()
        while text not in self.screen():
            if time.perf_counter() - t > limit:
                raise TimeoutError(f"{text!r} not on screen after {limit} s")
            time.sleep(0.003)
        return time.perf_counter() - t

    def key(self, k: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, k], check=True)

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], stderr=subprocess.DEVNULL)


def key_latencies(term: Terminal, presses: int = 9) -> list[float]:
    out = []
    for i in range(presses):
        time.sleep(0.15)  # a fast typist's pause; the first press too, not a robot's 0 ms after the plot
        t = time.perf_counter()
        term.key("v")
        term.wait_for(TITLES[i % 3], limit=10)
        out.append(1000 * (time.perf_counter() - t))
    return out


def main() -> None:
    if not shutil.which("tmux"):
        sys.exit("this benchmark drives a real terminal: install tmux")
    binary = Path(sys.executable).parent / "rmt-tui"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.safetensors"
        build(path)
        size_gb = path.stat().st_size / 1e9
        t = time.perf_counter()
        with open(path, "rb") as f:
            while f.read(1 << 26):
                pass
        read_s = time.perf_counter() - t
        term = Terminal(f"{binary} {path}", {"RMT_TUI_CACHE_DIR": f"{tmp}/cache"})
        try:
            t = time.perf_counter()
            term.wait_for("up_proj")
            tree_s = time.perf_counter() - t
            term.wait_for(TITLES[2])  # the first layer is analysed and drawn
            idle = key_latencies(term)
            term.key("a")
            time.sleep(1.0)
            busy = key_latencies(term)
            still = "Cancel" in term.screen()
        finally:
            term.close()
    print(f"file: {size_gb:.2f} GB safetensors, 72 tensors; "
          f"reading it once: {read_s:.2f} s")
    print(f"launch to layer tree on screen: {tree_s:.2f} s (target < 1 s; {tree_s / read_s:.2f}× one read of the file)")
    for label, lat in (("idle", idle), ("during 'analyse all'", busy)):
        print(f"key latency {label}: median {statistics.median(lat):.0f} ms, worst {max(lat):.0f} ms (target < 100 ms);"
              f" each: {' '.join(f'{x:.0f}' for x in lat)}")
    print(f"analysis still running at the end: {still}")


if __name__ == "__main__":
    main()
