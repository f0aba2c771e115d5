r"""Action encoder :math:`e(\cdot)`: a bias-free linear map followed by a non-affine BatchNorm.

seq-JEPA (Ghaemi et al., 2025, arXiv:2505.03176, §2.2) embeds every relative action with one
learnable linear projector of width 128 (16/64/256 ablated in Table 4). The official code
(``hafezgh/seq-jepa``, ``src/models.py``, ``SeqJEPA_Transforms.action_proj``) uses
``Linear(d_a, 128, bias=False)`` then ``BatchNorm1d(128, affine=False)``; the same projector embeds
the sequence-token actions and the predictor's action.
"""

from __future__ import annotations

from einops import pack, unpack
from torch import Tensor, nn

__all__ = ["ActionEncoder"]


class ActionEncoder(nn.Module):
    r"""Embed actions: :math:`e(a) = \operatorname{BN}(W a)`, BN without affine parameters.

    Every leading dimension is flattened into the BatchNorm batch, so in training mode a
    ``(B, M, A)`` input is normalised with the statistics of all ``B·M`` action vectors.

    Args:
        action_dim: Action dimension ``A`` (e.g. 9 for crop+jitter+blur, 4 for a quaternion).
        embed_dim: Embedding dimension ``E`` (paper: 128).
        momentum: BatchNorm running-statistics momentum (PyTorch default 0.1).
        eps: BatchNorm epsilon (PyTorch default 1e-5).

    Shape:
        - input: ``(..., A)`` with at least one leading dimension
        - output: ``(..., E)``
    """

    def __init__(
        self,
        *,
        action_dim: int,
        embed_dim: int = 128,
        momentum: float = 0.1,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        for name, value in (("action_dim", action_dim), ("embed_dim", embed_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        self.action_dim = action_dim
        self.embed_dim = embed_dim
        self.proj = nn.Linear(action_dim, embed_dim, bias=False)
        self.norm = nn.BatchNorm1d(embed_dim, eps=eps, momentum=momentum, affine=False)

    def forward(self, actions: Tensor) -> Tensor:
        """Return the embeddings of ``actions``."""
        if actions.ndim < 2 or actions.shape[-1] != self.action_dim:
            raise ValueError(
                f"actions must have shape (..., {self.action_dim}) with at least one leading "
                f"dimension, got {tuple(actions.shape)}"
            )
        flat, packed_shape = pack([actions], "* a")
        out = self.norm(self.proj(flat))
        [out] = unpack(out, packed_shape, "* e")
        return out

    def extra_repr(self) -> str:
        return f"action_dim={self.action_dim}, embed_dim={self.embed_dim}"
