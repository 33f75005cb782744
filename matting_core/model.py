"""The matting model's lifecycle: resolve the device, load once, predict batches."""

import os
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import nn

# torch-free, so that naming a device or counting cores imports no torch; re-exported here for
# the code that runs the model.
from matting_core.devices import DEVICES, PRECISIONS, torch_threads, usable_cores  # noqa: F401
from matting_core.errors import DeviceUnavailableError
from matting_core.registry import ModelSpec, get_spec
from matting_core.weights import cutout_home, load_state_dict

_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str) -> torch.device:
    """`auto` takes CUDA when usable; an explicit `cuda` without a usable GPU is an error, not a fallback."""
    if device not in DEVICES and not device.startswith("cuda:"):
        raise ValueError(f"unknown device {device!r}; use one of {', '.join(DEVICES)} or cuda:N")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        build = torch.version.cuda or "a CPU-only build"
        raise DeviceUnavailableError(
            f"device {device!r} was asked for but no usable GPU is visible (torch {torch.__version__}, "
            f"CUDA {build}); install a CUDA build of torch and check the driver, or use --device cpu"
        )
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32.

    `auto`: fp16 on CUDA; bf16 on a CPU with native bf16 matrix instructions, AMX tiles or
    AVX512-BF16, where it runs the model in ~0.6x the time of fp32 (2-core Sapphire Rapids
    box, AMX) or 0.55x (u2net) and 0.65x (u2netp) (2-core AMD EPYC box, AVX512-BF16, one
    thread, fp32 islands included); fp32 anywhere else, where bf16 would be emulated and slower.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return _DTYPES[precision]
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if native_bf16() else None


def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AMX tiles or AVX512-BF16)."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, check, bool)() for check in checks)


class _Fp32(nn.Module):
    """Runs the wrapped module with autocast off, for layers that lose too much in 16 bits."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.inner(x.float())


# Batch sizes a compiled model is run at: a batch is padded up to the next one, so a handful
# of shapes are compiled once (at warm-up) instead of one per batch size seen.
BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def bucket(n: int) -> int:
    return next((b for b in BUCKETS if b >= n), n)


class MattingModel:
    """One model on one device. `load()` is idempotent; `predict()` takes preprocessed batches.

    `compile=True` (CUDA) runs the network through torch.compile; batches are then padded to
    BUCKETS and `warm_up()` compiles each size up front, so no request waits on a compile.
    """

    def __init__(self, spec: ModelSpec, device: str = "auto", home: Path | None = None,
                 state_dict: dict[str, torch.Tensor] | None = None, precision: str = "auto",
                 compile: bool = False):
        self.spec = spec
        self.device = resolve_device(device)
        self.dtype = resolve_precision(precision, self.device)
        self.compiled = compile
        self._home = home
        self._state_dict = state_dict  # injectable so tests can run without the cache
        self._net: torch.nn.Module | None = None

    @property
    def precision(self) -> str:
        return next(name for name, dtype in _DTYPES.items() if dtype == self.dtype)

    def load(self) -> "MattingModel":
        if self._net is None:
            state = self._state_dict or load_state_dict(self.spec, self._home or cutout_home())
            # Built on the meta device and handed the loaded tensors (assign=True): no random init
            # of weights about to be overwritten, no copy into them (see channels_last below).
            with torch.device("meta"):
                net = self.spec.build()
            net.load_state_dict(state, strict=True, assign=True)
            if self.dtype is not None:
                for name in self.spec.fp32_modules:
                    parent, _, child = name.rpartition(".")
                    holder = net.get_submodule(parent)
                    setattr(holder, child, _Fp32(getattr(holder, child)))
            # channels_last: ~300 ms vs ~430 ms per 320×320 image on the 2-core CPU box. On the CPU
            # the input's layout (predict) picks that path and the weights' made no difference
            # (fp32 and bf16, both models), so they stay as loaded: u2net's load() takes ~0.05 s,
            # not ~0.5 s (2-core EPYC; 1-2 s when the box was busy).
            memory_format = torch.channels_last if self.device.type == "cuda" else torch.preserve_format
            # Module.to takes memory_format (as Tensor.to does); torch's overloads for it leave it out.
            net = net.eval().to(self.device, memory_format=memory_format)  # type: ignore[call-overload]
            if self.compiled:
                # Inductor caches its kernels on disk (TORCHINDUCTOR_CACHE_DIR), so a restarted
                # worker recompiles from the cache in seconds instead of ~40 s.
                os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str((self._home or cutout_home()) / "inductor"))
                # Compiling a Module gives an OptimizedModule, a Module (torch.compile is typed for any callable).
                net = cast(torch.nn.Module, torch.compile(net, dynamic=False))
            self._net = net
        return self

    def warm_up(self, max_batch: int) -> list[int]:
        """Run every bucket up to `max_batch` once (compiling each when compiled); returns the sizes run."""
        sizes = [b for b in BUCKETS if b <= bucket(max_batch)] if self.compiled else [1]
        size = self.spec.input_size
        for n in sizes:
            self.predict(np.zeros((n, 3, size, size), np.float32))
        return sizes

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """float32 N×3×S×S (see preprocess.normalize) -> float32 N×S×S alpha, min–max normalised per image."""
        size = self.spec.input_size
        if batch.dtype != np.float32 or batch.ndim != 4 or batch.shape[1:] != (3, size, size):
            raise ValueError(
                f"{self.spec.name} takes float32 Nx3x{size}x{size}, got {batch.dtype} {batch.shape}; "
                "build it with matting_core.preprocess.normalize and to_batch"
            )
        net = self.load()._net
        assert net is not None  # load() built it
        n = len(batch)
        if self.compiled and bucket(n) != n:
            batch = np.concatenate([batch, np.zeros((bucket(n) - n, *batch.shape[1:]), np.float32)])
        x = torch.from_numpy(batch)
        if self.device.type == "cuda":
            # Page-locked memory lets the copy run asynchronously with the GPU's other work.
            x = x.pin_memory().to(self.device, non_blocking=True)
        else:
            x = x.to(self.device)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(
            self.device.type, dtype=self.dtype, enabled=self.dtype is not None
        ):
            pred = net(x)[:n, 0].float()
        lo = pred.amin(dim=(1, 2), keepdim=True)
        hi = pred.amax(dim=(1, 2), keepdim=True)
        # Min–max per image as the reference code does; a flat map stays 0 instead of NaN.
        return ((pred - lo) / (hi - lo).clamp_min(1e-12)).cpu().numpy()


def get_model(name: str = "u2netp", device: str = "auto", home: Path | None = None,
              precision: str = "auto", compile: bool = False) -> MattingModel:
    """A not-yet-loaded model by registered name; unknown names raise ValueError listing the valid ones."""
    return MattingModel(get_spec(name), device=device, home=home, precision=precision, compile=compile)
