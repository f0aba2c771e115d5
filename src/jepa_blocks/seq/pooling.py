"""Token pooling: ``(N, T, D)`` token outputs of an encoder (a ViT) → ``(N, D)`` vectors."""

from __future__ import annotations

from typing import Literal, get_args

from torch import Tensor, nn

from jepa_blocks._validation import check_choice, check_floating_tensor

__all__ = ["TokenPool"]

PoolKind = Literal["mean", "cls", "max"]


class TokenPool(nn.Module):
    """Pool an encoder's tokens into one vector: the mean, the first (``[CLS]``) token or the max.

    :class:`~jepa_blocks.seq.SeqJEPA` applies it (its ``pool`` part) to encoders that return
    tokens, e.g. a ViT or :class:`~jepa_blocks.blocks.CRATE` without a head.

    Args:
        kind: ``"mean"`` over tokens, ``"cls"`` (token 0) or ``"max"`` (per feature).

    Shape:
        - input: ``(N, T, D)``; output: ``(N, D)``
    """

    def __init__(self, kind: PoolKind = "mean") -> None:
        super().__init__()
        self.kind: PoolKind = check_choice(kind, "kind", get_args(PoolKind))  # type: ignore[assignment]

    def forward(self, tokens: Tensor) -> Tensor:
        """Return the pooled ``(N, D)`` vectors."""
        check_floating_tensor(tokens, "tokens", min_ndim=3, shape_doc="(N, T, D)")
        if self.kind == "cls":
            return tokens[:, 0]
        return tokens.mean(1) if self.kind == "mean" else tokens.amax(1)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"
