r"""Aggregator :math:`g_\phi`: a learnable [AGG] token prepended to the tokens, a block stack, a norm.

seq-JEPA (Ghaemi et al., 2025, arXiv:2505.03176, §2.2) reads the tokens
:math:`u_i = [z_i; e(a_i)]` after a learnable [AGG] token with a post-norm transformer encoder;
:math:`z_\text{AGG}` is its output at position 0. Official code (``hafezgh/seq-jepa``,
``src/models.py``, ``TransformerEncoder_``): ``nn.TransformerEncoderLayer(d_model, nhead=4,
dim_feedforward=4·d_model, batch_first=True)`` (dropout 0.1, ReLU) cloned 3 times by
``nn.TransformerEncoder`` (identical initial weights), then ``LayerNorm(d_model)``; [AGG] is
``zeros(1, 1, d_model)``; no positional embedding, no attention mask.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from jepa_blocks._validation import (
    check_bool,
    check_choice,
    check_floating_tensor,
    check_int,
    check_probability,
)

__all__ = ["Aggregator", "transformer_blocks"]

Activation = Literal["relu", "gelu"]


def transformer_blocks(
    dim: int,
    *,
    depth: int = 3,
    heads: int = 4,
    mlp_ratio: int = 4,
    dropout: float = 0.1,
    activation: Activation = "relu",
    norm_first: bool = False,
    shared_init: bool = True,
) -> nn.ModuleList:
    """A stack of PyTorch's own ``nn.TransformerEncoderLayer`` (``batch_first=True``).

    Defaults: the paper's aggregator (3 post-norm layers, 4 heads, width ``4·dim``, dropout 0.1).

    Args:
        dim: Token dimension (paper: 640); must be divisible by ``heads``.
        depth, heads: Number of layers and of attention heads.
        mlp_ratio: Feed-forward width as a multiple of ``dim``.
        dropout: Dropout probability of every layer.
        activation: ``"relu"`` (PyTorch default, official code) or ``"gelu"``.
        norm_first: ``False`` for post-norm (paper), ``True`` for pre-norm.
        shared_init: Initialise one layer and deep-copy it ``depth`` times, as
            ``nn.TransformerEncoder`` does (official code); ``False``: initialise each layer.

    Returns:
        The layers, to pass as ``blocks`` to :class:`Aggregator`.

    Shape:
        - each layer: ``(B, N, dim)`` → ``(B, N, dim)``
    """
    check_int(dim, "dim", minimum=1)
    check_int(depth, "depth", minimum=1)
    check_int(heads, "heads", minimum=1)
    check_int(mlp_ratio, "mlp_ratio", minimum=1)
    if dim % heads:
        raise ValueError(f"dim must be divisible by heads, got dim={dim}, heads={heads}")
    check_probability(dropout, "dropout")
    check_choice(activation, "activation", get_args(Activation))
    check_bool(norm_first, "norm_first")
    check_bool(shared_init, "shared_init")

    def make() -> nn.Module:
        return nn.TransformerEncoderLayer(
            d_model=dim,
            nhead=heads,
            dim_feedforward=mlp_ratio * dim,
            dropout=float(dropout),
            activation=activation,
            batch_first=True,
            norm_first=norm_first,
        )

    if shared_init:
        first = make()
        return nn.ModuleList([copy.deepcopy(first) for _ in range(depth)])
    return nn.ModuleList([make() for _ in range(depth)])


class Aggregator(nn.Module):
    r"""Aggregate a token sequence into :math:`z_\text{AGG}` through a learnable [AGG] token.

    ``[AGG]`` (zeros at first, as the official code) is prepended, the optional ``pos_embedding``
    added, the ``blocks`` and the optional final LayerNorm applied, and the output at position 0
    returned. Without a positional embedding it is invariant to permuting the tokens: order
    reaches the model only through their contents (seq-JEPA: the action embeddings).

    Args:
        dim: Token dimension (paper: 640 = 512 + 128).
        blocks: Modules ``(B, N, dim) → (B, N, dim)``, called as ``block(x)`` or, with a mask, as
            ``block(x, src_key_padding_mask=mask)`` (``nn.TransformerEncoderLayer``'s keyword);
            ``None`` (default): the paper's :func:`transformer_blocks` ``(dim=dim)``.
        final_norm: Apply ``LayerNorm(dim)`` after the blocks (paper: yes).
        pos_embedding: Optional module adding positions to the ``(B, N + 1, dim)`` sequence, e.g.
            :class:`jepa_blocks.seq.PositionalEmbedding`; ``None`` (paper) adds none.

    Shape:
        - tokens: ``(B, N, dim)``
        - padding_mask: ``(B, N)`` boolean, ``True`` for padded (unobserved) tokens
        - output: ``(B, dim)``
    """

    def __init__(
        self,
        *,
        dim: int,
        blocks: Iterable[nn.Module] | None = None,
        final_norm: bool = True,
        pos_embedding: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.dim = check_int(dim, "dim", minimum=1)
        check_bool(final_norm, "final_norm")
        if pos_embedding is not None and not isinstance(pos_embedding, nn.Module):
            raise TypeError(
                f"pos_embedding must be an nn.Module, got {type(pos_embedding).__name__}"
            )
        if blocks is None:
            blocks = transformer_blocks(dim=dim)
        block_list = list(blocks)
        for i, b in enumerate(block_list):
            if not isinstance(b, nn.Module):
                raise TypeError(f"blocks[{i}] must be an nn.Module, got {type(b).__name__}")
        self.blocks = nn.ModuleList(block_list)
        self.agg_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.norm: nn.Module = nn.LayerNorm(dim) if final_norm else nn.Identity()
        self.pos_embedding = pos_embedding

    def forward(self, tokens: Tensor, *, padding_mask: Tensor | None = None) -> Tensor:
        """Return :math:`z_\\text{AGG}`, the output at the [AGG] position."""
        check_floating_tensor(tokens, "tokens", min_ndim=3)
        if tokens.ndim != 3 or tokens.shape[-1] != self.dim:
            raise ValueError(
                f"tokens must have shape (B, N, dim) = (B, N, {self.dim}), got "
                f"{tuple(tokens.shape)}"
            )
        b = tokens.shape[0]
        x = torch.cat([self.agg_token.expand(b, -1, -1).to(tokens.dtype), tokens], dim=1)
        if self.pos_embedding is not None:
            x = self.pos_embedding(x)
        kw: dict[str, Tensor] = {}
        if padding_mask is not None:
            got = getattr(padding_mask, "dtype", None), getattr(padding_mask, "shape", None)
            if got != (torch.bool, tokens.shape[:2]):
                raise ValueError(
                    f"padding_mask must be a bool tensor of shape (B, N) = "
                    f"{tuple(tokens.shape[:2])}, got {got if got[0] else type(padding_mask)}"
                )
            kw["src_key_padding_mask"] = torch.cat([padding_mask.new_zeros(b, 1), padding_mask], 1)
        for block in self.blocks:
            x = block(x, **kw)
        return self.norm(x[:, 0])

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
