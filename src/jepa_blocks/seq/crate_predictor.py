r"""Two-token CRATE predictor: :math:`z_\text{AGG}` and the action as tokens of a CRATE stack.

Replaces seq-JEPA's MLP predictor (arXiv:2505.03176) by CRATE blocks (step 3 of
``kaikun213/seq-jepa``; the design is ours): pass it as the ``predictor`` of ``SeqJEPA``.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from einops import pack, rearrange, unpack
from torch import Tensor, nn

from jepa_blocks._validation import check_choice, check_floating_tensor, check_int
from jepa_blocks.blocks.crate import CRATELayer, crate_blocks

__all__ = ["CRATEPredictor"]

Readout = Literal["state", "concat", "mean"]


class CRATEPredictor(nn.Module):
    r"""Predict the target embedding with CRATE layers over a state token and an action token.

    An input row :math:`[s; e]` (:math:`z_\text{AGG}`, then the action embedding) gives the
    tokens :math:`[P_s s;\ P_e e]`; after the CRATE layers and a LayerNorm, a linear head reads the
    state token (``readout="state"``), both concatenated or their mean. No BatchNorm: rows are
    independent.

    Args:
        in_dim: Input dimension, state + action embedding (paper sizes: 640 + 128).
        out_dim: Output dimension, the target's (paper: 512).
        action_embed_dim: Size of the action embedding; 0: no action input (one token).
        dim: Token width; default ``out_dim``.
        depth: Number of CRATE layers.
        heads: MSSA subspaces per layer (must divide ``dim`` unless ``dim_head`` is given).
        layer: The CRATE layer class (see :func:`~jepa_blocks.blocks.crate_blocks`).
        readout: ``"state"``, ``"concat"`` or ``"mean"``.
        **layer_kwargs: Further keywords of every layer (``eta``, ``dim_head``, ...).

    Shape:
        - input: ``(..., in_dim)`` with at least one leading dimension; output: ``(..., out_dim)``

    Example:
        >>> from jepa_blocks.seq.crate_predictor import CRATEPredictor
        >>> p = CRATEPredictor(in_dim=160 + 32, out_dim=128, action_embed_dim=32)
        >>> p(torch.randn(8, 192)).shape
        torch.Size([8, 128])
    """

    def __init__(
        self,
        *,
        in_dim: int,
        out_dim: int,
        action_embed_dim: int,
        dim: int | None = None,
        depth: int = 2,
        heads: int = 4,
        layer: type[nn.Module] = CRATELayer,
        readout: Readout = "state",
        **layer_kwargs: Any,
    ) -> None:
        super().__init__()
        check_int(in_dim, "in_dim")
        check_int(out_dim, "out_dim")
        check_int(action_embed_dim, "action_embed_dim", minimum=0)
        if action_embed_dim >= in_dim:
            raise ValueError(
                f"action_embed_dim must be smaller than in_dim (the state part needs at least one "
                f"feature), got action_embed_dim={action_embed_dim}, in_dim={in_dim}"
            )
        dim = out_dim if dim is None else check_int(dim, "dim")
        check_choice(readout, "readout", get_args(Readout))
        self.readout: Readout = readout
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.action_embed_dim = action_embed_dim
        self.state_dim = in_dim - action_embed_dim
        self.dim = dim
        self.num_tokens = 2 if action_embed_dim > 0 else 1
        self.state_proj = nn.Linear(self.state_dim, dim)
        self.action_proj: nn.Linear | None = (
            nn.Linear(action_embed_dim, dim) if action_embed_dim > 0 else None
        )
        self.blocks = crate_blocks(dim=dim, depth=depth, heads=heads, layer=layer, **layer_kwargs)
        self.norm = nn.LayerNorm(dim)
        width = dim * self.num_tokens if readout == "concat" else dim
        self.head = nn.Linear(width, out_dim)

    def tokens(self, x: Tensor) -> Tensor:
        """The input tokens :math:`T^0`: the state token (and the action token).

        Shape:
            - x: ``(B, in_dim)``
            - output: ``(B, T, dim)`` with ``T = 2`` (``T = 1`` when ``action_embed_dim == 0``)
        """
        state = self.state_proj(x[:, : self.state_dim])
        if self.action_proj is None:
            return rearrange(state, "b d -> b 1 d")
        action = self.action_proj(x[:, self.state_dim :])
        return rearrange([state, action], "t b d -> b t d")

    def forward(self, x: Tensor) -> Tensor:
        """Return the prediction for ``x``."""
        check_floating_tensor(x, "x", min_ndim=2, shape_doc=f"(..., {self.in_dim})")
        if x.shape[-1] != self.in_dim:
            raise ValueError(
                f"predictor input must have shape (..., {self.in_dim}), got {tuple(x.shape)}"
            )
        flat, packed_shape = pack([x], "* d")
        t = self.tokens(flat)
        for block in self.blocks:
            t = block(t)
        t = self.norm(t)
        if self.readout == "state":
            h = t[:, 0]
        elif self.readout == "mean":
            h = t.mean(dim=1)
        else:
            h = rearrange(t, "b t d -> b (t d)")
        return unpack(self.head(h), packed_shape, "* d")[0]

    def extra_repr(self) -> str:
        return (
            f"in_dim={self.in_dim}, out_dim={self.out_dim}, "
            f"action_embed_dim={self.action_embed_dim}, dim={self.dim}, readout={self.readout!r}"
        )
