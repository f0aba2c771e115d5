r"""Image encoders :math:`f_\theta`: a small CNN for CPU demos and tests, and ResNet-18.

:func:`resnet18_encoder` is seq-JEPA's encoder (arXiv:2505.03176; official ``hafezgh/seq-jepa``
``src/models.py``); torchvision is imported only when it is called.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from jepa_blocks._validation import (
    NonFiniteError,
    check_bool,
    check_choice,
    check_floating_tensor,
    check_int,
)

__all__ = ["SmallCNN", "resnet18_encoder"]


class SmallCNN(nn.Module):
    """A three-stage CNN encoder: conv3×3 stride 1, 2, 2, each with BatchNorm and ReLU, then a head.

    A linear head over a ``g × g`` pooled grid (``grid=g > 1``) keeps *where* each feature is;
    ``out_norm="batch"`` (BatchNorm without affine parameters) centres the all-positive post-ReLU
    features, which a cosine loss could otherwise match with their mean direction.

    Args:
        in_channels: Input channels.
        out_dim: Output dimension ``D``.
        width: Channels of the first stage.
        grid: Side of the pooled grid read by the linear head (1: global pooling, no head).
        out_norm: ``"none"`` or ``"batch"``.

    Shape:
        - input: ``(N, in_channels, H, W)``; output: ``(N, out_dim)``
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_dim: int = 128,
        width: int = 32,
        grid: int = 1,
        out_norm: Literal["none", "batch"] = "none",
    ) -> None:
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels", minimum=1)
        self.out_dim = check_int(out_dim, "out_dim", minimum=1)
        self.width = check_int(width, "width", minimum=1)
        self.grid = check_int(grid, "grid", minimum=1)
        self.out_norm = check_choice(out_norm, "out_norm", ("none", "batch"))
        last = out_dim if grid == 1 else 2 * width
        chans = [in_channels, width, 2 * width, last]
        layers: list[nn.Module] = []
        for i, stride in enumerate((1, 2, 2)):
            layers += [
                nn.Conv2d(chans[i], chans[i + 1], 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(chans[i + 1]),
                nn.ReLU(inplace=True),
            ]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.head: nn.Module = (
            nn.Identity()
            if grid == 1
            else nn.Linear(last * grid * grid, out_dim, bias=out_norm == "none")
        )
        self.norm: nn.Module = (
            nn.BatchNorm1d(out_dim, affine=False) if out_norm == "batch" else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        """Return one ``out_dim`` vector per image.

        Raises:
            NonFiniteError: NaN or inf in ``x`` in training mode (eager), before BatchNorm updates.
        """
        check_floating_tensor(x, "x")
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"images must have shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        if self.training and not torch.compiler.is_compiling() and not torch.isfinite(x).all():
            raise NonFiniteError("x must be finite in training mode, got NaN or inf values")
        return self.norm(self.head(self.pool(self.features(x)).flatten(1)))

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_dim={self.out_dim}, width={self.width}, "
            f"grid={self.grid}, out_norm={self.out_norm!r}"
        )


def resnet18_encoder(
    *, cifar_stem: bool = True, in_channels: int = 3, zero_init_residual: bool = True
) -> nn.Module:
    """torchvision ResNet-18 without its classifier: images → 512-d pooled features, random weights.

    Args:
        cifar_stem: Official ``--cifar-resnet``: a 3×3 stride-1 stem convolution, no max-pool.
        in_channels: Input channels of the stem convolution.
        zero_init_residual: Zero-initialise the last BatchNorm of every residual branch (official).

    Returns:
        A ``torchvision.models.ResNet`` whose ``fc`` is ``nn.Identity``.

    Shape:
        - input: ``(N, in_channels, H, W)``; output: ``(N, 512)``
    """
    check_int(in_channels, "in_channels", minimum=1)
    check_bool(cifar_stem, "cifar_stem")
    check_bool(zero_init_residual, "zero_init_residual")
    import torchvision

    model = torchvision.models.resnet18(weights=None, zero_init_residual=zero_init_residual)
    if cifar_stem:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()  # type: ignore[assignment]
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    model.fc = nn.Identity()  # type: ignore[assignment]
    return model
