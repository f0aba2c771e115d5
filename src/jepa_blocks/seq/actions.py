r"""Action encoder :math:`e(\cdot)`: a bias-free linear map followed by a non-affine BatchNorm.

seq-JEPA (Ghaemi et al., 2025, arXiv:2505.03176, §2.2; width 128, Table 4 ablates 16/64/256);
official code ``hafezgh/seq-jepa``, ``src/models.py``, ``SeqJEPA_Transforms.action_proj``:
``Linear(d_a, 128, bias=False)`` then ``BatchNorm1d(128, affine=False)``, for the token actions
and the predictor's action alike.
"""

from __future__ import annotations

from collections.abc import Callable

from einops import pack, unpack
from torch import Tensor, nn

from jepa_blocks._validation import check_floating_tensor, check_int, check_positive

__all__ = ["ActionEncoder"]


def over_leading_dims(
    fn: Callable[[Tensor], Tensor], x: Tensor, dim: int, name: str, *, batch_norm: bool = False
) -> Tensor:
    """``fn`` of ``x`` ``(..., dim)`` with every leading dimension flattened into one batch
    (of at least 2 vectors with ``batch_norm``: BatchNorm's batch statistics)."""
    check_floating_tensor(x, name, min_ndim=2, shape_doc=f"(..., {dim}) (a leading dimension)")
    if x.shape[-1] != dim or (batch_norm and x.numel() < 2 * dim):
        at_least = " and at least 2 vectors (BatchNorm in training mode)" if batch_norm else ""
        raise ValueError(f"{name} must have shape (..., {dim}){at_least}, got {tuple(x.shape)}")
    flat, packed_shape = pack([x], "* d")
    [out] = unpack(fn(flat), packed_shape, "* d")
    return out


class ActionEncoder(nn.Module):
    r"""Embed actions: :math:`e(a) = \operatorname{BN}(W a)`, BN without affine parameters.

    Every leading dimension is flattened into the BatchNorm batch, so in training mode a
    ``(B, M, A)`` input is normalised with the statistics of all ``B·M`` action vectors.

    Args:
        action_dim: Action dimension ``A`` (e.g. 9 for crop+jitter+blur, 4 for a quaternion).
        embed_dim: Embedding dimension ``E`` (paper: 128).
        momentum, eps: BatchNorm's running-statistics momentum and epsilon (PyTorch defaults).

    Shape:
        - input: ``(..., A)`` with at least one leading dimension; output: ``(..., E)``
    """

    def __init__(
        self, *, action_dim: int, embed_dim: int = 128, momentum: float = 0.1, eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.action_dim = check_int(action_dim, "action_dim")
        self.embed_dim = check_int(embed_dim, "embed_dim")
        check_positive(eps, "eps")
        if momentum is not None and check_positive(momentum, "momentum", allow_zero=True) > 1:
            raise ValueError(f"momentum must be in [0, 1] or None, got {momentum!r}")
        self.proj = nn.Linear(action_dim, embed_dim, bias=False)
        self.norm = nn.BatchNorm1d(embed_dim, eps=eps, momentum=momentum, affine=False)

    def forward(self, actions: Tensor) -> Tensor:
        """Return the embeddings of ``actions``."""
        return over_leading_dims(
            lambda a: self.norm(self.proj(a)), actions, self.action_dim, "actions",
            batch_norm=self.training,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return f"action_dim={self.action_dim}, embed_dim={self.embed_dim}"
