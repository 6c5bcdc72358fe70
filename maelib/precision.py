"""Which arithmetic to train in, per device: float32, bf16 autocast, or fp16 autocast with a gradient scaler.

``resolve_amp(amp, device)`` turns the ``amp`` setting into a dtype by measured rules (see its
docstring and README, Performance); ``describe_amp`` says which one and why, in one line.
"""

from __future__ import annotations

import torch

AMP_MODES = ("auto", "bf16", "fp16", "off")


def cpu_has_native_bf16() -> bool:
    """Does this CPU compute in bfloat16 natively (AVX512-BF16 or AMX)?

    Only then is bf16 autocast on the CPU faster than float32; elsewhere it is emulated and slower.
    ``torch.backends.cpu.get_cpu_capability()`` names the vector instruction set ("AVX2",
    "AVX512", ...), and recent torch versions also answer the finer question directly.
    """
    capability = torch.backends.cpu.get_cpu_capability()
    if "AVX512_BF16" in capability or "AMX" in capability:
        return True
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):  # private, so look before calling
        check = getattr(torch.cpu, name, None)
        if check is not None and check():
            return True
    return False


def cuda_has_native_bf16(device: torch.device | str = "cuda") -> bool:
    """Does this GPU compute in bfloat16 natively (compute capability 8.0 or newer: A100, RTX 30xx, L4, H100)?

    ``torch.cuda.is_bf16_supported()`` also says yes on a T4 or V100 (7.x), where bf16 is emulated
    and much slower than fp16.
    """
    return torch.cuda.get_device_capability(device) >= (8, 0)


def resolve_amp(amp: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device`` (None = full float32).

    ``"auto"`` takes the fastest precision that trains as well, by device:

    * CUDA: bf16 on GPUs with native bf16 (compute capability >= 8.0); fp16 with a gradient
      scaler below that (T4, V100), where bf16 would be emulated;
    * CPU: bf16 where the CPU has native bf16 (AVX512-BF16 or AMX): measured faster for every
      lesson model (1.1x to 2x, ``benchmarks/train_step.py``; README, Performance); float32
      elsewhere, where bf16 is emulated and 10 to 30 times slower;
    * MPS (Apple): float32.

    ``"bf16"`` / ``"fp16"`` force that dtype on any device; ``"off"`` = float32.
    """
    device = torch.device(device)
    if amp == "off":
        return None
    if amp == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError(f"amp='bf16' but {torch.cuda.get_device_name(device)} does not support "
                             "bfloat16; use amp='fp16' or 'auto'")
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    if amp == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if cuda_has_native_bf16(device) else torch.float16
        if device.type == "cpu" and cpu_has_native_bf16():
            return torch.bfloat16
        return None
    raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")


def describe_amp(amp: str, device: torch.device | str) -> str:
    """One line saying which precision ``amp`` gives on ``device``, and why (printed by ``fit`` and the CLI)."""
    device = torch.device(device)
    dtype = resolve_amp(amp, device)
    name = {None: "float32", torch.bfloat16: "bf16 autocast",
            torch.float16: "fp16 autocast + gradient scaler"}[dtype]
    if amp != "auto":
        return f"precision: {name} (amp={amp!r})"
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        why = f"compute capability {major}.{minor}: " + ("native bf16" if dtype == torch.bfloat16 else
                                                          "no native bf16, so fp16")
    elif device.type == "cpu":
        why = "native bf16 on this CPU" if dtype == torch.bfloat16 else "no native bf16 on this CPU"
    else:
        why = f"float32 on {device.type}"
    return f"precision: {name} (amp='auto': {why})"
