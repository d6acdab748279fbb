"""Where a training run computes: the torch device (:func:`resolve_device`, ``"auto"`` = CUDA
when present) and the autocast dtype of its forward passes (:func:`autocast_dtype`). Shared by
the supervised and PPO trainers and their evaluations."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is checked.

    Raises:
        ValueError: an unknown device string, or CUDA asked for but not available.
    """
    if isinstance(device, torch.device):
        resolved = device
    elif device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            resolved = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:n]', got {device!r}") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for but CUDA is not available here; use "
                         "device='auto' or 'cpu'")
    return resolved


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype ``amp`` (:attr:`SupervisedConfig.amp
    <tradezoo.agents.supervised.SupervisedConfig>`) stands for on ``device`` (``None``:
    float32, no autocast). ``"auto"`` follows PyTorch AMP's advice: bf16 on a CUDA device that
    supports it (no loss scaling needed), else fp16 on CUDA (with loss scaling), and float32
    on the CPU (``"bf16"`` opts in there)."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "bf16" or (amp == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16
