"""The bf16-autocast tolerance the tests compare against float32 with (docs/training.md,
"Mixed precision")."""

from __future__ import annotations

import torch
from torch import Tensor

#: Largest relative L2 error of bf16 autocast against float32 (outputs and gradients). bf16
#: keeps 8 significant bits (unit roundoff 2^-9 = 0.2%); the small test models measure 0.25%
#: to 0.6%, so 3% leaves a margin of five while still catching a wrong cast or a dropped term.
BF16_RELATIVE_TOLERANCE = 0.03


def relative_error(got: Tensor, want: Tensor) -> float:
    """``||got - want|| / ||want||`` (L2 over all elements, in float32)."""
    want = want.float()
    return float(torch.linalg.vector_norm(got.float() - want) / torch.linalg.vector_norm(want))
