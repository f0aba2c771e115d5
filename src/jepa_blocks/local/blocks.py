r"""An encoder as a chain of blocks, each with a small local head.

Block-local training (Greedy InfoMax, Löwe et al., 2019; CLAPP, Illing et al., 2021; LPL,
Halvagal & Zenke, 2023; blockwise SSL, Siddiqui et al., 2023) cuts an encoder into blocks
:math:`f = f_K \circ \dots \circ f_1` and gives each block its own objective on its own output:
:class:`BlockEncoder` is the chain, :func:`conv_block_encoder` a four-block CNN for CPU demos,
:func:`split_encoder` views an existing encoder as blocks sharing its modules, and
:class:`LocalHead` is the small head of a block.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal

import torch
from einops import rearrange
from torch import Tensor, nn

from jepa_blocks._validation import check_choice, check_floating_tensor, check_int
from jepa_blocks.encoders import SmallCNN

__all__ = [
    "BlockEncoder",
    "LocalHead",
    "conv_block_encoder",
    "local_heads",
    "split_encoder",
]


class _GlobalPool(nn.Module):
    """``(N, C, H, W)`` → ``(N, C)`` by averaging; ``(N, C)`` passes through."""

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim == 2:
            return x
        return x.flatten(2).mean(dim=-1)


class BlockEncoder(nn.Module):
    """An encoder made of a chain of blocks and a parameter-free readout.

    ``forward(x) = readout(blocks[K-1](… blocks[0](x)))``; the blocks (possibly shared with
    another encoder, see :func:`split_encoder`) hold all the weights.

    Args:
        blocks: The blocks, in order; each maps the previous block's output to its own.
        out_channels: Output channels (or features) of each block, e.g. ``[16, 32, 64, 128]``.
        readout: Maps the last block's output to ``(N, D)``; default: global average pooling
            over the spatial dimensions (identity on ``(N, D)``).

    Attributes:
        out_dim: ``D = out_channels[-1]``.

    Shape:
        - input: ``(N, C, H, W)`` (or whatever ``blocks[0]`` takes); output: ``(N, D)``
    """

    def __init__(
        self,
        blocks: Sequence[nn.Module],
        *,
        out_channels: Sequence[int],
        readout: nn.Module | None = None,
    ) -> None:
        super().__init__()
        block_list = list(blocks)
        if not block_list:
            raise ValueError("blocks must hold at least one module, got none")
        for i, b in enumerate(block_list):
            if not isinstance(b, nn.Module):
                raise TypeError(f"blocks[{i}] must be an nn.Module, got {type(b).__name__}")
        chans = [check_int(c, "out_channels[i]") for c in out_channels]
        if len(chans) != len(block_list):
            raise ValueError(
                f"out_channels must have one entry per block ({len(block_list)}), got {len(chans)}"
            )
        if readout is not None and not isinstance(readout, nn.Module):
            raise TypeError(f"readout must be an nn.Module or None, got {type(readout).__name__}")
        self.blocks = nn.ModuleList(block_list)
        self.out_channels = tuple(chans)
        self.readout: nn.Module = readout if readout is not None else _GlobalPool()
        self.out_dim = chans[-1]

    @property
    def num_blocks(self) -> int:
        """``K``, the number of blocks."""
        return len(self.blocks)

    def forward(self, x: Tensor) -> Tensor:
        """Run every block, then the readout."""
        for block in self.blocks:
            x = block(x)
        return self.readout(x)

    def features(self, x: Tensor) -> Iterator[Tensor]:
        """Yield each block's output in turn (gradients flow between blocks).

        Shape:
            - x: the first block's input; yields: block ``k``'s output, e.g. ``(N, C_k, H_k, W_k)``
        """
        for block in self.blocks:
            x = block(x)
            yield x

    def extra_repr(self) -> str:
        return f"num_blocks={self.num_blocks}, out_channels={self.out_channels}"


def _conv_block(c_in: int, c_out: int, stride: int, batch_norm: bool) -> nn.Sequential:
    conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=not batch_norm)
    norm = [nn.BatchNorm2d(c_out)] if batch_norm else []
    return nn.Sequential(conv, *norm, nn.ReLU(inplace=True))


def conv_block_encoder(
    *,
    in_channels: int = 1,
    widths: Sequence[int] = (16, 32, 64, 128),
    strides: Sequence[int] = (1, 2, 2, 1),
    norm: Literal["readout", "block", "none"] = "readout",
) -> BlockEncoder:
    """A CNN encoder of conv3×3–ReLU blocks with global average pooling.

    The default widths are :class:`jepa_blocks.SmallCNN`'s (``width=16``, ``out_dim=128``) plus
    a stage, so that on 28×28 inputs no block holds over about half of the saved activations (the
    peak left by per-block backward-and-free).

    Args:
        in_channels: Image channels.
        widths: Output channels of each block; the last is the output dimension ``D``.
        strides: Stride of each block's convolution.
        norm: ``"readout"``: biased, unnormalised convolutions (as LPL's VGG-11: local objectives
            read raw rectified activity) and a parameter-free :class:`~torch.nn.BatchNorm1d` on
            the pooled output for the end-to-end objective; ``"block"``: conv–BN–ReLU (the default
            before 2026-12, under which LPL's local stages fall below the random network,
            :doc:`/tutorials/step6`); ``"none"``: end-to-end seq-JEPA collapses.

    Returns:
        The encoder (random initialisation from the current torch seed).

    Shape:
        - input: ``(N, in_channels, H, W)``; output: ``(N, widths[-1])``
    """
    check_int(in_channels, "in_channels")
    check_choice(norm, "norm", ("readout", "block", "none"))
    ws = [check_int(w, "widths[i]") for w in widths]
    ss = [check_int(s, "strides[i]") for s in strides]
    if not ws or len(ws) != len(ss):
        raise ValueError(
            f"widths and strides must be non-empty and of equal length, got {len(ws)} widths "
            f"and {len(ss)} strides"
        )
    chans = [in_channels, *ws]
    blocks = [_conv_block(chans[i], chans[i + 1], ss[i], norm == "block") for i in range(len(ws))]
    bn = nn.Sequential(_GlobalPool(), nn.BatchNorm1d(ws[-1], affine=False))
    return BlockEncoder(blocks, out_channels=ws, readout=bn if norm == "readout" else None)


_WIDTHS = (
    (nn.Conv2d, "out_channels"),
    (nn.Linear, "out_features"),
    ((nn.BatchNorm2d, nn.BatchNorm1d), "num_features"),
)


def _has_params(*modules: nn.Module) -> bool:
    return any(True for m in modules for _ in m.parameters())


_RESNET_PARTS = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def _is_resnet(encoder: nn.Module) -> bool:
    fc = getattr(encoder, "fc", None)
    return all(hasattr(encoder, n) for n in _RESNET_PARTS) and isinstance(fc, nn.Identity)


def _out_channels(module: nn.Module) -> int:
    """Output channels of a block: those of its last conv / BatchNorm / linear / LayerNorm."""
    for m in reversed(list(module.modules())):
        if isinstance(m, nn.LayerNorm):
            return int(m.normalized_shape[-1])
        for cls, attr in _WIDTHS:
            if isinstance(m, cls):
                return int(getattr(m, attr))
    raise ValueError(
        f"cannot infer the output channels of block {type(module).__name__}; build a "
        f"BlockEncoder with out_channels yourself"
    )


def split_encoder(encoder: nn.Module) -> BlockEncoder:
    """View ``encoder`` as a :class:`BlockEncoder` whose blocks **share** its modules.

    No weights are copied: training the blocks trains ``encoder``. Supported:

    * :class:`BlockEncoder`: returned as is.
    * :class:`jepa_blocks.SmallCNN`: its three conv–BN–ReLU stages (with a grid head or an
      output norm, the last block also holds the pooling, the head and the norm).
    * a torchvision ResNet with ``fc = Identity`` (e.g. :func:`jepa_blocks.resnet18_encoder`):
      ``[conv1, bn1, relu, maxpool, layer1]``, ``layer2``, ``layer3``, ``layer4`` (the four
      stages of blockwise SSL, Siddiqui et al., 2023).
    * ``nn.Sequential`` whose output is ``(N, D)``: one block per child with parameters, each
      followed by the parameter-free children after it (activations, pooling, flatten).

    Args:
        encoder: The encoder.

    Raises:
        TypeError: For an encoder of another kind (build a :class:`BlockEncoder` instead).
    """
    if not isinstance(encoder, nn.Module):
        raise TypeError(f"encoder must be an nn.Module, got {type(encoder).__name__}")
    if isinstance(encoder, BlockEncoder):
        return encoder
    if isinstance(encoder, SmallCNN):
        feats = encoder.features
        blocks: list[nn.Module] = [feats[3 * i : 3 * i + 3] for i in range(len(feats) // 3)]
        if encoder.grid != 1 or encoder.out_norm != "none":
            # the grid head and output norm belong to the last block: (N, D) out, no readout
            blocks[-1] = nn.Sequential(
                *blocks[-1].children(), encoder.pool, nn.Flatten(), encoder.head, encoder.norm
            )
    elif _is_resnet(encoder):
        parts: list[nn.Module] = [getattr(encoder, name) for name in _RESNET_PARTS]
        blocks = [nn.Sequential(*parts[:5]), *parts[5:]]
    elif isinstance(encoder, nn.Sequential):
        groups: list[list[nn.Module]] = []
        for child in encoder:
            if not groups or _has_params(child):
                groups.append([child])
            else:
                groups[-1].append(child)  # activations, pooling: end of the previous block
        if len(groups) > 1 and not _has_params(*groups[0]):
            groups[1] = groups[0] + groups[1]
            groups.pop(0)
        if not _has_params(*groups[0]):
            raise TypeError("encoder is an nn.Sequential without parameters; nothing to train")
        blocks = [nn.Sequential(*g) for g in groups]
    else:
        raise TypeError(
            f"cannot split a {type(encoder).__name__} into blocks; pass a BlockEncoder (e.g. "
            f"conv_block_encoder()), a SmallCNN, a torchvision ResNet or an nn.Sequential"
        )
    return BlockEncoder(blocks, out_channels=[_out_channels(b) for b in blocks])


class LocalHead(nn.Module):
    r"""A block's local head: pooled embedding and an optional action-conditioned predictor.

    * :meth:`embed`: global average pooling of the block output, then an optional linear
      projection to ``dim`` (``dim=None``: no projection, LPL's default; Halvagal & Zenke, 2023).
    * :meth:`predict`: the next view's embedding: without actions, the embedding itself (LPL's
      slowness); with ``action_dim > 0``, :math:`\hat e_{t+1} = e_t + g([e_t; a_t])`, :math:`g` a
      two-layer MLP whose last layer starts at zero (LPL's prediction at first; a per-block JEPA).

    Args:
        in_channels: Channels ``C`` of the block output.
        dim: Embedding dimension (``None``: ``C``, no projection).
        action_dim: ``A``; 0 disables the action-conditioned predictor.
        hidden: Hidden width of :math:`g`.

    Shape:
        - embed: ``(N, C, H, W)`` or ``(N, C)`` → ``(N, dim)``
        - predict: ``(..., dim)`` and ``(..., A)`` → ``(..., dim)``
    """

    def __init__(
        self, in_channels: int, *, dim: int | None = None, action_dim: int = 0, hidden: int = 128
    ) -> None:
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels")
        self.dim = in_channels if dim is None else check_int(dim, "dim")
        self.action_dim = check_int(action_dim, "action_dim", minimum=0)
        self.hidden = check_int(hidden, "hidden")
        self.pool = _GlobalPool()
        self.proj: nn.Module = nn.Identity() if dim is None else nn.Linear(in_channels, dim)
        self.predictor: nn.Module | None = None
        if self.action_dim > 0:
            last = nn.Linear(self.hidden, self.dim)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            self.predictor = nn.Sequential(
                nn.Linear(self.dim + self.action_dim, self.hidden), nn.ReLU(), last
            )

    def embed(self, h: Tensor) -> Tensor:
        """Pool (and project) a block output into one embedding per sample."""
        check_floating_tensor(h, "h", min_ndim=2, shape_doc="(N, C, H, W) or (N, C)")
        if h.shape[1] != self.in_channels:
            raise ValueError(
                f"h must have {self.in_channels} channels in dim 1, got shape {tuple(h.shape)}"
            )
        return self.proj(self.pool(h))

    def predict(self, e: Tensor, actions: Tensor | None = None) -> Tensor:
        """Predict the next view's embedding from ``e`` (and the action leading to it)."""
        if self.predictor is None:
            return e
        if actions is None:
            raise ValueError("this head is action-conditioned (action_dim > 0); pass actions")
        if actions.shape[:-1] != e.shape[:-1] or actions.shape[-1] != self.action_dim:
            raise ValueError(
                f"actions must have shape {(*e.shape[:-1], self.action_dim)} to match e "
                f"{tuple(e.shape)}, got {tuple(actions.shape)}"
            )
        return e + self.predictor(torch.cat([e, actions.to(e.dtype)], dim=-1))

    forward = embed

    def sequence(self, h: Tensor, batch: int) -> Tensor:
        """Embed ``(B·T, …)`` block outputs of ``T`` views per sample into ``(B, T, dim)``."""
        return rearrange(self.embed(h), "(b t) d -> b t d", b=batch)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, dim={self.dim}, action_dim={self.action_dim}, "
            f"hidden={self.hidden}"
        )


def local_heads(
    encoder: BlockEncoder, *, dim: int | None = None, action_dim: int = 0, hidden: int = 128
) -> nn.ModuleList:
    """One :class:`LocalHead` per block of ``encoder`` (same settings for all).

    Args:
        encoder: The block encoder (see :func:`split_encoder`).
        dim: Embedding dimension of every head (``None``: each block's channels).
        action_dim: ``A`` for action-conditioned predictors (0: none).
        hidden: Hidden width of the predictors.
    """
    if not isinstance(encoder, BlockEncoder):
        raise TypeError(f"encoder must be a BlockEncoder, got {type(encoder).__name__}")
    return nn.ModuleList(
        LocalHead(c, dim=dim, action_dim=action_dim, hidden=hidden) for c in encoder.out_channels
    )
