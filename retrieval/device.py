"""Where to compute and in which precision: CUDA when torch sees it, the CPU otherwise."""
from __future__ import annotations

import contextlib

import torch

HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}
PRECISIONS = ("auto", "fp32", *HALF)
"""extract.precision: auto = bf16/fp16 autocast on CUDA and fp32 on the CPU; or one of them."""


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={name} was asked for but torch sees no CUDA device; use device=auto")
    return device


def autocast(device: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA (bf16 where supported, else fp16); full precision on the CPU,
    where half-precision convolutions are slower than fp32."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return contextlib.nullcontext()
    if precision == "auto":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = HALF[precision]
    return torch.autocast(device_type=device.type, dtype=dtype)
