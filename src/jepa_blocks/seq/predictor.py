r"""Predictor :math:`h_\psi`: a two-layer MLP with BatchNorm and ReLU.

seq-JEPA (Ghaemi et al., 2025, arXiv:2505.03176, §2.2 and A.3): a 2-layer MLP with hidden width
1024 maps :math:`[z_\text{AGG}; e(a_M)]` to the predicted target embedding. Official code
(``hafezgh/seq-jepa``, ``src/models.py``, ``SeqJEPA_Transforms.predictor``): ``Linear(in, 1024,
bias=False)`` → ``BatchNorm1d(1024)`` → ``ReLU`` → ``Linear(1024, 512)``; with ``pred_hidden <= 0``
it is ``Linear(in, 512, bias=False)`` → ``BatchNorm1d(512)`` (``hidden=None`` here).
``norm="none"`` (an ablation: collapse without batch statistics) drops the BatchNorm.
"""

from __future__ import annotations

from typing import Literal, get_args

from torch import Tensor, nn

from jepa_blocks._validation import check_choice, check_int
from jepa_blocks.seq.actions import over_leading_dims

__all__ = ["Predictor"]

PredictorNorm = Literal["batch", "none"]


class Predictor(nn.Module):
    r"""MLP predictor ``Linear(no bias) → BatchNorm1d → ReLU → Linear``.

    Every leading dimension is flattened into the BatchNorm batch.

    Args:
        in_dim: Input dimension (paper: 640 + 128 = 768).
        out_dim: Output dimension, the target's dimension (paper: 512).
        hidden: Hidden width (paper: 1024); ``None`` gives the official code's one-layer fallback
            ``Linear(in_dim, out_dim, bias=False) → BatchNorm1d(out_dim)``.
        norm: ``"batch"`` (paper) or ``"none"`` (no BatchNorm; a bias on the first layer instead).

    Shape:
        - input: ``(..., in_dim)`` with at least one leading dimension; output: ``(..., out_dim)``
    """

    def __init__(
        self,
        *,
        in_dim: int,
        out_dim: int,
        hidden: int | None = 1024,
        norm: PredictorNorm = "batch",
    ) -> None:
        super().__init__()
        check_choice(norm, "norm", get_args(PredictorNorm))
        self.in_dim = check_int(in_dim, "in_dim")
        self.out_dim = check_int(out_dim, "out_dim")
        self.hidden = None if hidden is None else check_int(hidden, "hidden")
        self.norm = norm
        batch = norm == "batch"
        first = out_dim if hidden is None else hidden
        layers: list[nn.Module] = [nn.Linear(in_dim, first, bias=not batch)]
        if batch:
            layers.append(nn.BatchNorm1d(first))
        if hidden is not None:
            layers += [nn.ReLU(inplace=True), nn.Linear(hidden, out_dim)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Return the prediction for ``x``."""
        bn = self.training and self.norm == "batch"
        return over_leading_dims(self.net, x, self.in_dim, "predictor input", batch_norm=bn)

    def extra_repr(self) -> str:
        return (
            f"in_dim={self.in_dim}, out_dim={self.out_dim}, hidden={self.hidden}, "
            f"norm={self.norm!r}"
        )
