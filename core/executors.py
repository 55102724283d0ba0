"""Where analyses run: in this process (``local``, the default) or on a Ray cluster (``ray``).

One interface for both: ``run(ckpt, layers, options, progress, cancel, ordered)`` yields a
LayerResult per layer — in the layers' order, or as each finishes — with progress counting each
layer once and the cancel token honoured between layers (local) or at once (Ray). The spectrum
cache stays on the driver: a cached layer is never submitted, and what a task computes is stored
there when it comes back.

Ray (the optional extra ``rmt-tui[ray]``) is imported only here, only when asked for. Each task
opens the checkpoint by path itself and reads only its own tensors: tensors never pass through the
driver. Small matrices are batched per shard, big ones go one per task; at most ``window`` tasks
are in flight. Before any work, one probe per node checks that the checkpoint is there, the same
as the driver sees it, with the same package versions (and CUDA, when GPUs are asked for).
"""
from __future__ import annotations

import os
import socket
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

from core.errors import RmtError, RmtWarning, UsageError
from core.io.checkpoint import Checkpoint
from core.io.layers import Layer
from core.progress import Cancelled, CancelToken, Progress, no_progress
from core.scan import AnalysisOptions, LayerResult, analyse_checkpoint, analyse_layer, cached_analysis, config_of
from core.text import first_line

EXECUTORS = "local, ray, ray:HOST:PORT or ray://HOST:PORT"
INSTALL = "pip install 'rmt-tui[ray]'"
SMALL_ELEMENTS = 1 << 20  # matrices up to this size are batched, several to a task
BATCH_LAYERS, BATCH_ELEMENTS = 256, 1 << 24
POLL_SECONDS = 0.05
FAULT_ENV = "RMT_TUI_RAY_FAULT"  # tests: a file whose presence makes the next task kill its worker once


class LocalExecutor:
    """Today's loop, in this process: layers one at a time, small ones in bulk."""

    name = "local"

    def run(self, ckpt: Checkpoint, layers: Iterable[Layer], options: AnalysisOptions,
            progress: Progress | None = None, cancel: CancelToken | None = None,
            ordered: bool = True) -> Iterator[LayerResult]:
        yield from analyse_checkpoint(ckpt, options, layers, progress, cancel)

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class RaySettings:
    address: str | None = None  # None: Ray's own rule (RAY_ADDRESS, a cluster on this host, else a private one)
    gpus_per_task: float = 0.0
    cpus_per_task: float = 1.0
    max_retries: int = 3
    window: int | None = None  # tasks in flight; default 4 × the cluster's CPUs


def make_executor(spec: str, gpus_per_task: float = 0.0, cpus_per_task: float = 1.0, max_retries: int = 3):
    """``local``, ``ray`` (Ray's own rule), ``ray:HOST:PORT`` (a cluster's GCS address) or
    ``ray://HOST:PORT`` (Ray Client)."""
    if spec == "local":
        if gpus_per_task or cpus_per_task != 1.0:
            raise UsageError("--gpus-per-task and --cpus-per-task go with --executor ray")
        return LocalExecutor()
    if spec == "ray":
        address = None
    elif spec.startswith("ray://"):
        address = spec
    elif spec.startswith("ray:"):
        address = spec[4:]
    else:
        raise UsageError(f"unknown executor {spec!r}: use {EXECUTORS}")
    if gpus_per_task < 0 or cpus_per_task <= 0 or max_retries < 0:
        raise UsageError("--gpus-per-task ≥ 0, --cpus-per-task > 0 and --max-retries ≥ 0")
    return RayExecutor(RaySettings(address, gpus_per_task, cpus_per_task, max_retries))


# ------------------------------------------------------------------------------------------ Ray


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("rmt-tui", "numpy", "scipy", "ray"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "missing"
    return out


def _file_facts(paths: list[str]) -> dict[str, tuple[int, int] | str]:
    facts: dict[str, tuple[int, int] | str] = {}
    for p in paths:
        try:
            st = os.stat(p)
            facts[p] = (st.st_size, st.st_mtime_ns)
        except OSError as exc:
            facts[p] = exc.strerror or str(exc)
    return facts


def _probe(paths: list[str], want_cuda: bool) -> dict:
    """Runs on one node: what it sees of the checkpoint, its versions, and CUDA."""
    cuda = None
    if want_cuda:
        from core.device import resolve_device

        try:
            cuda = resolve_device("auto") != "cpu"
        except ImportError:  # no torch on that node
            cuda = False
    return {"host": socket.gethostname(), "files": _file_facts(paths), "versions": _versions(), "cuda": cuda}


_OPENED: dict[tuple[str, str], tuple[tuple, Checkpoint]] = {}  # a worker's open checkpoints, by path and view


def _worker_checkpoint(path: str, conv_view: str, files: list[str]) -> Checkpoint:
    """A worker process keeps its checkpoints open between tasks while their files are unchanged."""
    facts = tuple(sorted(_file_facts(files).items()))
    key = (path, conv_view)
    if key not in _OPENED or _OPENED[key][0] != facts:
        from core.io.checkpoint import open_checkpoint

        _OPENED[key] = (facts, open_checkpoint(path, conv_view))
    return _OPENED[key][1]


class _KeyRecorder:
    """A cache that holds nothing: it keeps the content key ``analyse_layer`` computes, so that a
    worker can send it to the driver, whose cache is the one that stores."""

    key: str | None = None

    def content_key_for(self, fingerprint: str) -> None:
        return None

    def load(self, key, shape, cfg) -> None:
        return None

    def remember_key(self, fingerprint: str, key: str) -> None:
        self.key = key

    def store(self, key, cfg, analysis) -> None:
        pass


def _analyse_task(path: str, conv_view: str, files: list[str], names: list[str], options: AnalysisOptions,
                  want_keys: bool, gpus: float) -> dict:
    """Runs on a worker: analyse these layers of the checkpoint (read here, by path). Returns the
    results, their cache keys (big layers, when the driver caches) and where it ran."""
    fault = os.environ.get(FAULT_ENV)
    if fault and os.path.exists(fault):
        os.unlink(fault)
        os._exit(1)  # a worker lost mid-task, once: Ray runs the task again
    start = time.time()
    device = "cpu"
    if gpus > 0:  # declared GPUs without a real one (no device files: torch is not even imported): the CPU
        from core.device import resolve_device

        device = resolve_device("auto")
    opts = replace(options, use_cache=False, device=device)
    ckpt = _worker_checkpoint(path, conv_view, files)
    layers = [ckpt.layer(n) for n in names]
    if want_keys and len(layers) == 1:  # a big layer: the content key, for the driver's cache
        recorder = _KeyRecorder()
        results, keys = [analyse_layer(ckpt, layers[0], opts, recorder)], [recorder.key]
    else:
        results = list(analyse_checkpoint(ckpt, opts, layers))
        keys = [None] * len(results)
    import ray

    return {"results": results, "keys": keys, "pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "device": device,
            "start": start, "end": time.time()}


class RayExecutor:
    name = "ray"

    def __init__(self, settings: RaySettings = RaySettings()):
        self.settings = settings
        self.task_log: list[dict] = []  # where each task ran (pid, node, device, times): for tests and benchmarks
        self._remote = None
        self._probed: set[tuple] = set()

    # -- connecting -----------------------------------------------------------------------------
    def _ray(self):
        try:
            import ray
        except ImportError:
            raise UsageError(f"--executor ray needs Ray: {INSTALL}") from None
        if not ray.is_initialized():
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage telemetry from a tool's run
            kw = {"log_to_driver": False, "logging_level": "ERROR"}  # worker output never floods the terminal
            if self.settings.address is None or not self.settings.address.startswith("ray://"):
                kw["include_dashboard"] = False
            try:
                ray.init(address=self.settings.address, **kw)
            except ConnectionError as exc:
                raise RmtError(self._connection_advice(str(exc))) from None
            except ValueError as exc:
                if "ray[client]" in str(exc):
                    raise UsageError(f"ray:// addresses need Ray Client: pip install 'ray[client]' ({exc})") from None
                raise RmtError(f"cannot start or reach Ray: {exc}") from None
        if self._remote is None:
            # max_calls=0: workers are reused for GPU tasks too (by default each GPU task starts a
            # fresh worker process; measured 20.2 s → 5.7 s for 24 tasks).
            self._remote = ray.remote(max_calls=0)(_analyse_task)
            self._probe_remote = ray.remote(_probe)
        return ray

    def _connection_advice(self, message: str) -> str:
        where = self.settings.address or os.environ.get("RAY_ADDRESS") or "the local Ray cluster"
        if "timeout" in message.lower():
            return (f"cannot connect to {where}: {message}. Since Ray 2.59 clusters require a token: set "
                    "RAY_AUTH_MODE=token and put the cluster's token (its ~/.ray/auth_token) in ~/.ray/auth_token "
                    "or RAY_AUTH_TOKEN here; also check the address and that the Ray versions match")
        return f"cannot connect to {where}: {message}"

    # -- before any work ------------------------------------------------------------------------
    def preflight(self, ray, ckpt: Checkpoint, files: list[str]) -> None:
        """One probe per alive node: the same files (size, mtime), versions, and CUDA if asked for."""
        key = (tuple(files), tuple(sorted(_file_facts(files).items())))
        if key in self._probed:
            return
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        mine = {"files": _file_facts(files), "versions": _versions()}
        gpus = ray.cluster_resources().get("GPU", 0)
        if self.settings.gpus_per_task > 0 and gpus < self.settings.gpus_per_task:
            raise RmtError(f"--gpus-per-task {self.settings.gpus_per_task:g}, but the Ray cluster offers {gpus:g} "
                           "GPUs: the tasks would wait forever; use --gpus-per-task 0 or a cluster with GPUs")
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        want_cuda = self.settings.gpus_per_task > 0
        refs = [self._probe_remote.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote(files, want_cuda) for n in nodes]
        problems = []
        for node, ref in zip(nodes, refs):
            try:
                got = ray.get(ref, timeout=60)
            except Exception as exc:  # a node that cannot even run the probe
                problems.append(f"{node.get('NodeManagerAddress', '?')}: the probe failed ({first_line(exc, 300)})")
                continue
            where = f"{got['host']} ({node.get('NodeManagerAddress', '?')})"
            for f, fact in got["files"].items():
                if isinstance(fact, str):
                    problems.append(f"{where}: {f}: {fact}")
                elif fact != mine["files"][f]:
                    problems.append(f"{where}: {f} differs (size, mtime {fact} here {mine['files'][f]})")
            for pkg, v in got["versions"].items():
                if v != mine["versions"][pkg]:
                    problems.append(f"{where}: {pkg} {v}, the driver has {mine['versions'][pkg]}")
            if want_cuda and not got["cuda"] and node.get("Resources", {}).get("GPU"):
                warnings.warn(RmtWarning(f"{where} declares {node['Resources']['GPU']:g} GPUs to Ray but CUDA is not "
                                         "available there: its tasks run on the CPU"), stacklevel=2)
        if problems:
            raise RmtError(f"{ckpt.path}: the Ray cluster cannot run this analysis as it is:\n  "
                           + "\n  ".join(problems) + "\nput the checkpoint on a filesystem every node sees, at the "
                           "same path, and install the same versions on every node")
        self._probed.add(key)

    # -- the work -------------------------------------------------------------------------------
    def run(self, ckpt: Checkpoint, layers: Iterable[Layer], options: AnalysisOptions,
            progress: Progress | None = None, cancel: CancelToken | None = None,
            ordered: bool = True) -> Iterator[LayerResult]:
        from core.cache import SpectrumCache

        todo = list(ckpt.layers if layers is None else layers)
        total = len(todo)
        tick = progress or no_progress
        ray = self._ray()
        files = sorted({str(ckpt.file_of(l.tensor)) for l in todo})
        self.preflight(ray, ckpt, files)
        cache = SpectrumCache() if options.use_cache else None
        ready: dict[int, LayerResult] = {}
        missing: list[int] = []
        for i, layer in enumerate(todo):  # what the driver's cache already holds is never submitted
            if not layer.analysable:
                ready[i] = LayerResult(layer, None)
            elif (hit := cached_analysis(ckpt, layer, options, cache)) is not None:
                ready[i] = LayerResult(layer, hit)
            else:
                missing.append(i)
        batches = self._batches(ckpt, todo, missing)
        done, emitted = len(ready), 0
        tick(done, total, "")
        if not ordered:
            for i in sorted(ready):
                yield ready[i]
        window = self.settings.window or max(4, 4 * int(ray.cluster_resources().get("CPU", 1)))
        inflight: dict = {}
        queue = list(batches)
        try:
            while queue or inflight:
                if cancel is not None and cancel.cancelled:
                    raise Cancelled()
                while queue and len(inflight) < window:
                    batch = queue.pop(0)
                    ref = self._remote.options(num_cpus=self.settings.cpus_per_task,
                                               num_gpus=self.settings.gpus_per_task,
                                               max_retries=self.settings.max_retries).remote(
                        str(ckpt.path), ckpt.conv_view, files, [todo[i].name for i in batch], options,
                        cache is not None, self.settings.gpus_per_task)
                    inflight[ref] = batch
                finished, _ = ray.wait(list(inflight), num_returns=1, timeout=POLL_SECONDS)
                for ref in finished:
                    batch = inflight.pop(ref)
                    out = self._get(ray, ref)
                    self.task_log.append({k: v for k, v in out.items() if k not in ("results", "keys")})
                    for i, r, key in zip(batch, out["results"], out["keys"]):
                        if cache is not None and key is not None and r.analysis is not None:
                            cache.remember_key(ckpt.fingerprint(r.layer), key)
                            cache.store(key, config_of(options), r.analysis)
                        done += 1
                        tick(done, total, r.layer.name)
                        if ordered:
                            ready[i] = r
                        else:
                            yield r
                if ordered:
                    while emitted in ready:
                        yield ready.pop(emitted)
                        emitted += 1
            if ordered:
                while emitted in ready:
                    yield ready.pop(emitted)
                    emitted += 1
        finally:
            for ref in inflight:  # cancelled, or the consumer stopped: stop the rest at once
                try:
                    ray.cancel(ref, force=True)
                except Exception:
                    pass
        tick(total, total, "")

    def _batches(self, ckpt: Checkpoint, todo: list[Layer], missing: list[int]) -> list[list[int]]:
        """Big matrices one per task; small ones together, per shard, up to a bound."""
        batches, open_by_file = [], {}
        for i in missing:
            layer = todo[i]
            n = layer.matrix[0] * layer.matrix[1] if layer.matrix else 0
            if n > SMALL_ELEMENTS:
                batches.append([i])
                continue
            f = ckpt.file_of(layer.tensor)
            cur = open_by_file.get(f)
            if cur is None or len(cur[0]) >= BATCH_LAYERS or cur[1] + n > BATCH_ELEMENTS:
                cur = open_by_file[f] = ([], 0)
                batches.append(cur[0])
            cur[0].append(i)
            open_by_file[f] = (cur[0], cur[1] + n)
        return batches

    @staticmethod
    def _get(ray, ref):
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, RmtError):
                raise cause from None
            raise RmtError(f"a Ray task failed: {first_line(cause or exc, 300)}") from None
        except ray.exceptions.TaskCancelledError:
            raise Cancelled() from None
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as exc:
            raise RmtError(f"a Ray task was lost more than --max-retries times: {first_line(exc, 300)}") from None

    def close(self) -> None:
        pass  # the Ray session stays for the process: starting one costs seconds
