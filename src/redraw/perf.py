"""Process-level speed settings for training on a CPU."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done = False


def tune_allocator(threshold: int = 1 << 30) -> bool:
    """Stop glibc from handing memory back to the OS after every training step.

    Large tensors are mmap'ed and unmapped each step by default, so every update page-faults
    its working set in again. Raising the mmap and trim thresholds keeps freed blocks in the
    heap for reuse. No-op (returns False) where glibc is not the allocator.
    """
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, threshold) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, threshold) == 1
    except (OSError, AttributeError):
        return False
    _done = ok
    return ok


def pick_device():
    """The device the stages train and act on: the GPU where there is one, else the CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def native_bf16(device="cpu") -> bool:
    """Whether ``device`` runs bfloat16 matrix products natively, so that bf16 autocast pays: a
    CUDA GPU that supports bf16, or a CPU with AMX or AVX512-BF16. Elsewhere PyTorch emulates
    them: on an AVX2-only CPU (many AMD EPYC and desktop parts) a bf16 product ran ~50x slower
    than the fp32 one (1.3 vs 70 GFLOP/s at 256 x 256 x 256, one thread), and a ``quick``-preset
    RSSM update took ~30 s instead of ~2.8 s in fp32 (docs/performance.md, "Precision")."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        checks = (getattr(torch.cpu, "_is_amx_tile_supported", None), getattr(torch.cpu, "_is_avx512_bf16_supported", None))
        return any(bool(check()) for check in checks if check is not None)
    return False


def resolve_bf16(value, device="cpu", where: str = "params.yaml: pretrain.bf16") -> bool:
    """``pretrain.bf16`` as a bool: true / false as given, ``auto`` where ``native_bf16`` says
    the device has native bf16 products; anything else is refused naming ``where``."""
    if isinstance(value, bool):
        return value
    if value == "auto":
        return native_bf16(device)
    from redraw.config import ConfigError

    raise ConfigError(f"{where} must be true, false or auto, got {value!r}")


@dataclass
class PerfConfig:
    """Speed settings of the training stages (section ``perf`` of params.yaml)."""

    #: torch.compile (Inductor) the update's hot paths: the imagination steps (8 per graph), the reward and
    #: continue heads, the actor-critic losses and the world-model loss's terms after ``observe``.
    #: false: the eager path. Compiled and eager
    #: agree within float tolerance; randomness is drawn outside the compiled code either way
    compile: bool = True
    #: torch threads per training process (0: torch's default). A thread count changes float
    #: rounding, so the CPU presets fix it (1) and a stage computes the same numbers however many
    #: stages run beside it; at their sizes two one-thread processes also finish two trainings sooner
    threads: int = 0
    #: Inductor's on-disk cache (relative to the working directory): compiled kernels are reused
    #: by later processes instead of being built again
    cache_dir: str = ".cache/torchinductor"
    #: DRAW's prior chain (``models.prior_chain``) and the RSSM's observe chain
    #: (``models.rssm_chain``) over a training sequence as one autograd node each with its own
    #: backward (~2x faster at batch 16 on a CPU). false: step by step through
    #: autograd. The same numbers to float rounding
    fused_chain: bool = True
    #: the agent's Adam optimizers (world model, actor, critic; Plan2Explore's) with torch's fused
    #: kernel, one per tensor, instead of the single-tensor loop torch runs on a CPU by default:
    #: the same update to float rounding, its step ~3x faster. false: torch's default
    fused_adam: bool = True

    def __post_init__(self):
        from redraw.config import is_count

        for key in ("compile", "fused_chain", "fused_adam"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"perf.{key} must be true or false, got {getattr(self, key)!r}")
        if not is_count(self.threads):
            raise ValueError(f"perf.threads must be a whole number >= 0, got {self.threads!r}")


def perf_config(params: dict, path: str = "params.yaml") -> PerfConfig:
    """``PerfConfig`` from params.yaml's ``perf`` section (defaults where a file has none); a bad
    value is refused naming the file and the key."""
    from redraw.config import ConfigError, section

    if "perf" not in params:
        return PerfConfig()
    try:
        return section(params, "perf", PerfConfig, path)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{path}: {exc}") from None


def apply(cfg: PerfConfig) -> None:
    """Process-wide settings for a training stage: allocator, threads, Inductor's cache."""
    import torch

    tune_allocator()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.compile:
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(cfg.cache_dir).resolve()))


class Compiled:
    """``fn`` under torch.compile, run eagerly if compilation fails on this machine (an old
    compiler, an unsupported op): the failure is reported once and the eager function, which
    computes the same thing, is used from then on. The first call's compile time is printed."""

    def __init__(self, fn, name: str):
        import torch

        self.fn, self.name = fn, name
        self.compiled = torch.compile(fn, dynamic=False, fullgraph=True)
        self.failed, self.calls = False, 0

    def __call__(self, *args, **kwargs):
        if self.failed:
            return self.fn(*args, **kwargs)
        first = self.calls == 0
        self.calls += 1
        start = time.perf_counter()
        try:
            out = self.compiled(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any compiler failure: fall back, say so once
            self.failed = True
            print(f"perf: compiling {self.name} failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                  "running it eagerly", file=sys.stderr)
            return self.fn(*args, **kwargs)
        if first:
            COMPILE_SECONDS[self.name] = COMPILE_SECONDS.get(self.name, 0.0) + time.perf_counter() - start
        return out


COMPILE_SECONDS: dict[str, float] = {}  #: first-call (compile) time of each compiled region


def compile_report() -> str:
    """One line: the time the first call of each compiled region took (its compilation)."""
    if not COMPILE_SECONDS:
        return "perf: nothing compiled"
    parts = ", ".join(f"{name} {sec:.1f} s" for name, sec in COMPILE_SECONDS.items())
    return f"perf: compiled in {sum(COMPILE_SECONDS.values()):.1f} s ({parts})"


class CompiledRegions:
    """For a module whose methods named in ``COMPILED`` may run compiled: ``use_compile(True)``
    wraps each in ``Compiled``; the module's code calls ``self._compiled.get(name, self.name)``."""

    COMPILED: tuple[str, ...] = ()

    def use_compile(self, enabled: bool) -> None:
        """Run the methods in ``COMPILED`` compiled by torch.compile, or (``False``) eagerly."""
        self._compiled.clear()
        if enabled:
            for name in self.COMPILED:
                self._compiled[name] = Compiled(getattr(self, name), f"{type(self).__name__}.{name}")

    @property
    def _compiled(self) -> dict:
        # kept out of a module's attributes (not state, not a submodule): the compiled callables
        return self.__dict__.setdefault("_compiled_fns", {})


@contextlib.contextmanager
def eager(*parts):
    """Run the world models / actor-critics ``parts`` eagerly inside the block: for one-off work
    (reports, evaluation batches of other shapes) that would only pay for a compilation."""
    saved = [dict(p._compiled) for p in parts]
    for p in parts:
        p._compiled.clear()
    try:
        yield
    finally:
        for p, fns in zip(parts, saved):
            p._compiled.update(fns)
