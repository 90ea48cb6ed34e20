"""Full float32 on CUDA, set once for the whole process when the models go onto a GPU.

CUDA may run float32 matmuls, cuDNN convolutions and cuDNN LSTMs in TF32 (torch 2.13's cuDNN defaults
allow it), which keeps 10 of float32's 23 mantissa bits: errors far above float32 rounding, so a VAD
probability or a segmentation score can land on the other side of a threshold and move a region, a
turn, a transcript, and CAM++ vectors differ from the CPU's and from run to run. These models are small
and the GPU waits on the host anyway: exactness costs nothing measurable here.

Set once, not around each call: the switches are process-wide, and switching them while other
threads' calls run made those calls' precision depend on timing; under the new per-operation API,
reading the legacy `allow_tf32` flags (pyannote.audio does on every batch) raises while they are mixed.
"""

from __future__ import annotations

from typing import Any


def _switches(torch: Any) -> list[tuple[Any, str, Any]]:
    """(owner, attribute, the full-float32 value) of each switch that allows TF32 on CUDA."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    conv, rnn = getattr(cudnn, "conv", None), getattr(cudnn, "rnn", None)
    if hasattr(conv, "fp32_precision"):  # torch >= 2.9: the per-operation API
        return [
            (matmul, "fp32_precision", "ieee"),
            (conv, "fp32_precision", "ieee"),
            (rnn, "fp32_precision", "ieee"),
        ]
    return [(matmul, "allow_tf32", False), (cudnn, "allow_tf32", False)]


def use_full_float32() -> dict[str, Any]:
    """Turn TF32 off for every CUDA float32 operation of this process; returns what was set."""
    import torch

    done: dict[str, Any] = {}
    for owner, name, value in _switches(torch):
        setattr(owner, name, value)
        done[f"{getattr(owner, '__name__', type(owner).__name__)}.{name}"] = value
    return done


def full_float32_in_effect() -> bool:
    import torch

    return all(getattr(owner, name) == value for owner, name, value in _switches(torch))
