r"""CRATE stack diagnostics: per-layer subspace coding rate, code sparsity, head specialisation.

:math:`R^c` and sparsity follow the official ``Ma-Lab-Berkeley/CRATE`` ``vis_utils``; head
specialisation is derived here (no published metric).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from jepa_blocks._validation import check_bool, check_floating_tensor, check_int, check_positive
from jepa_blocks.blocks._heads import check_finite
from jepa_blocks.blocks.crate import ISTA, LAYER_TYPES, MSSA, OvercompleteISTA
from jepa_blocks.linalg import Precision
from jepa_blocks.metrics.rank import effective_rank
from jepa_blocks.rate import coding_rate

__all__ = [
    "CRATERecorder",
    "StackDiagnostics",
    "code_sparsity",
    "crate_monitor",
    "crate_stack_diagnostics",
    "head_action_r2",
    "project_heads",
    "specialization_score",
    "subspace_coding_rate",
    "weighted_specialization",
]


def project_heads(tokens: Tensor, bases: Tensor) -> Tensor:
    r"""Project tokens on each subspace basis, :math:`W_k = X U_k`, in float32 (or float64).

    Args:
        tokens: Tokens :math:`X` (rows).
        bases: Bases :math:`U_k`, e.g. :meth:`jepa_blocks.blocks.MSSA.subspaces`.

    Shape:
        - tokens: ``(..., N, d)``; bases: ``(K, d, p)``; output: ``(..., K, N, p)``
    """
    check_floating_tensor(tokens, "tokens", min_ndim=2, shape_doc="(..., N, d)")
    check_floating_tensor(bases, "bases", min_ndim=3, shape_doc="(K, d, p)")
    if bases.ndim != 3 or bases.shape[1] != tokens.shape[-1]:
        d = tokens.shape[-1]
        raise ValueError(f"bases must have shape (K, d={d}, p), got {tuple(bases.shape)}")
    check_finite(tokens, "tokens")
    check_finite(bases, "bases")
    dtype = torch.promote_types(torch.promote_types(tokens.dtype, bases.dtype), torch.float32)
    with torch.autocast(device_type=tokens.device.type, enabled=False):
        return torch.einsum("...nd,kdp->...knp", tokens.to(dtype), bases.to(dtype))


def subspace_coding_rate(
    tokens: Tensor,
    bases: Tensor,
    *,
    eps: float = 0.1,
    normalize: bool = True,
    per_head: bool = False,
    precision: Precision = "float32",
) -> Tensor:
    r"""Compression term :math:`R^c(X \mid U_{[K]})` of the tokens against their subspaces.

    :math:`R^c = \sum_k \tfrac12 \log\det(I_N + \frac{p}{N\varepsilon^2} \hat W_k \hat W_k^\top)`
    with :math:`W_k = X U_k`, its rows normalised to unit length when ``normalize`` (official).

    Args:
        tokens: Tokens of one layer, e.g. the MSSA inputs recorded by :class:`CRATERecorder`.
        bases: Bases :math:`U_k` of that layer's MSSA (:meth:`MSSA.subspaces`).
        eps: :math:`\varepsilon > 0` (the official code's ``eps = 0.01`` is :math:`\varepsilon^2`).
        normalize: Normalise each per-head token vector to unit norm.
        per_head: Return the per-head rates instead of their sum.
        precision: ``"float32"`` or ``"float64"``, passed to :func:`jepa_blocks.coding_rate`.

    Shape:
        - tokens: ``(..., N, d)``; bases: ``(K, d, p)``
        - output: ``(...)``, or ``(..., K)`` with ``per_head=True``
    """
    check_positive(eps, "eps")
    check_bool(normalize, "normalize")
    check_bool(per_head, "per_head")
    w = project_heads(tokens, bases)
    if normalize:
        w = F.normalize(w, dim=-1)
    rates = coding_rate(w, eps=eps, precision=precision, distributed="none")
    return rates if per_head else rates.sum(-1)


def code_sparsity(codes: Tensor, *, dim: int | tuple[int, ...] | None = None) -> Tensor:
    """Fraction of exact zeros in sparse codes (e.g. ISTA outputs), float32.

    Args:
        codes: The codes.
        dim: Dimensions to average over; ``None``: all.

    Shape:
        - codes: any; output: ``()`` with ``dim=None``, else ``codes`` without ``dim``
    """
    if check_floating_tensor(codes, "codes").numel() == 0:
        raise ValueError(f"codes must be non-empty, got shape {tuple(codes.shape)}")
    zeros = (check_finite(codes, "codes") == 0).to(torch.float32)
    try:
        return zeros.mean() if dim is None else zeros.mean(dim=dim)
    except (IndexError, RuntimeError, TypeError):
        raise ValueError(f"dim must be None or dims of codes {codes.shape}, got {dim!r}") from None


def _check_head_regression(features: Tensor, actions: Tensor, names: tuple[str, str]) -> None:
    f, a = names
    check_finite(check_floating_tensor(features, f, min_ndim=3, shape_doc="(S, K, p)"), f)
    check_finite(check_floating_tensor(actions, a, min_ndim=2, shape_doc="(S, A)"), a)
    if features.ndim != 3 or actions.ndim != 2 or features.shape[0] != actions.shape[0]:
        raise ValueError(
            f"{f} must be (S, K, p) and {a} (S, A) with the same number of samples S, got "
            f"{tuple(features.shape)} and {tuple(actions.shape)}"
        )


def head_action_r2(
    head_features: Tensor,
    actions: Tensor,
    *,
    ridge: float = 0.0,
    eval_features: Tensor | None = None,
    eval_actions: Tensor | None = None,
) -> Tensor:
    r"""Per-head :math:`R^2` of a linear regression of each action coordinate on the head.

    Centred ridge (:math:`\rho = 0`: pseudo-inverse) regression per head, :math:`R^2 = 1 -
    \text{SSE}/\text{SST}` (0 for a constant coordinate), in float64. In-sample :math:`R^2` is
    biased upwards when :math:`S \lesssim p`: ``eval_*`` score it on held-out samples instead.

    Args:
        head_features: Per-head features, e.g. :class:`CRATERecorder` ``heads[:, :, token]``.
        actions: Action coordinates of each sample.
        ridge: Ridge :math:`\rho \ge 0`.
        eval_features: Held-out per-head features to score on.
        eval_actions: Held-out action coordinates.

    Shape:
        - head_features: ``(S, K, p)``; actions: ``(S, A)``
        - eval_features: ``(S', K, p)``; eval_actions: ``(S', A)``; output: ``(K, A)``
    """
    _check_head_regression(head_features, actions, ("head_features", "actions"))
    if eval_features is not None or eval_actions is not None:
        if eval_features is None or eval_actions is None:
            raise ValueError("pass both eval_features and eval_actions, or neither")
        _check_head_regression(eval_features, eval_actions, ("eval_features", "eval_actions"))
        k, p = head_features.shape[1:]
        if eval_features.shape[1:] != (k, p):
            got = tuple(eval_features.shape)
            raise ValueError(f"eval_features must have shape (S', {k}, {p}), got {got}")
        if eval_actions.shape[1] != actions.shape[1]:
            got = tuple(eval_actions.shape)
            raise ValueError(f"eval_actions must have {actions.shape[1]} coordinates, got {got}")
    rho = check_positive(ridge, "ridge", allow_zero=True)
    with torch.autocast(device_type=head_features.device.type, enabled=False):
        h = rearrange(head_features.to(torch.float64), "s k p -> k s p")
        y = actions.to(torch.float64)
        mu_h, mu_y = h.mean(dim=1, keepdim=True), y.mean(dim=0, keepdim=True)
        h, yc = h - mu_h, y - mu_y
        if rho > 0:
            eye = torch.eye(h.shape[-1], dtype=h.dtype, device=h.device)
            beta = torch.linalg.solve(h.mT @ h + rho * eye, h.mT @ yc)  # (K, p, A)
        else:
            beta = torch.linalg.pinv(h) @ yc
        if eval_features is None or eval_actions is None:
            residual = yc - h @ beta  # (K, S, A)
            sst = yc.pow(2).sum(dim=0)  # (A,)
        else:
            he = rearrange(eval_features.to(torch.float64), "s k p -> k s p")
            ye = eval_actions.to(torch.float64)
            residual = ye - ((he - mu_h) @ beta + mu_y)
            sst = (ye - ye.mean(dim=0)).pow(2).sum(dim=0)
        sse = residual.pow(2).sum(dim=1)  # (K, A)
        safe = torch.where(sst > 0, sst, torch.ones_like(sst))
        return torch.where(sst > 0, 1.0 - sse / safe, torch.zeros_like(sse))


def specialization_score(r2: Tensor) -> Tensor:
    r"""How concentrated each action coordinate's explained variance is on few heads.

    :math:`1 - H(q_{\cdot j}) / \log K`, :math:`q_{kj} \propto \max(R^2_{kj}, 0)` over heads: 1
    when one head explains the coordinate alone, 0 when all do equally (or none does, or
    ``K == 1``). Derived.

    Args:
        r2: :math:`R^2` per head and action coordinate, e.g. from :func:`head_action_r2`.

    Shape:
        - r2: ``(..., K, A)``; output: ``(..., A)``
    """
    check_finite(check_floating_tensor(r2, "r2", min_ndim=2, shape_doc="(..., K, A)"), "r2")
    k = r2.shape[-2]
    if k < 2:
        return torch.zeros_like(r2[..., 0, :])
    pos = r2.clamp_min(0)
    total = pos.sum(dim=-2, keepdim=True)
    q = pos / torch.where(total > 0, total, torch.ones_like(total))
    entropy = -(q * torch.where(q > 0, q, torch.ones_like(q)).log()).sum(dim=-2)
    score = 1.0 - entropy / math.log(k)
    return torch.where(total[..., 0, :] > 0, score, torch.zeros_like(score))


class CRATERecorder:
    """Record, with forward hooks, the tensors the CRATE diagnostics need from each layer.

    Every CRATE layer of ``model`` is hooked, in ``model.modules()`` order; for layer ``i``:

    * ``inputs[i]``, ``outputs[i]``: the layer's input and output tokens, ``(B, N, D)``;
    * ``mssa_inputs[i]``: the normalised tokens entering its MSSA, ``(B, N, D)``;
    * ``heads[i]``: the per-head MSSA outputs before the output map, ``(B, K, N, p)``;
    * ``codes[i]``: the ISTA codes, ``(B, N, m)``; not for decoders.

    Each forward pass overwrites the record. A context manager (or call :meth:`remove`); eager only.

    Args:
        model: A model or a layer stack containing CRATE layers.
        detach: Store detached tensors.

    Example:
        >>> from jepa_blocks.blocks import CRATELayer, CRATERecorder
        >>> stack = torch.nn.Sequential(*[CRATELayer(32, heads=4) for _ in range(3)])
        >>> with CRATERecorder(stack) as rec:
        ...     _ = stack(torch.randn(2, 16, 32))
        >>> rec.coding_rates().shape, rec.sparsities().shape
        (torch.Size([3, 2]), torch.Size([3]))
    """

    def __init__(self, model: nn.Module, *, detach: bool = True) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self.detach = check_bool(detach, "detach")
        self.layers: list[nn.Module] = [m for m in model.modules() if isinstance(m, LAYER_TYPES)]
        if not self.layers:
            raise ValueError("model contains no CRATELayer, CRATEAlphaLayer or CRATEDecoderLayer")
        self.inputs: dict[int, Tensor] = {}
        self.mssa_inputs: dict[int, Tensor] = {}
        self.heads: dict[int, Tensor] = {}
        self.codes: dict[int, Tensor] = {}
        self.outputs: dict[int, Tensor] = {}
        self._handles: list[RemovableHandle] = []
        for i, layer in enumerate(self.layers):
            attn = layer.attn
            assert isinstance(attn, MSSA)
            self._handles.append(layer.register_forward_pre_hook(self._pre(self.inputs, i)))
            self._handles.append(layer.register_forward_hook(self._post(self.outputs, i)))
            self._handles.append(attn.register_forward_pre_hook(self._pre(self.mssa_inputs, i)))
            self._handles.append(attn.head_tap.register_forward_hook(self._post(self.heads, i)))
            ista = getattr(layer, "ista", None)
            if isinstance(ista, ISTA):
                self._handles.append(ista.register_forward_hook(self._post(self.codes, i)))
            elif isinstance(ista, OvercompleteISTA):
                tap = ista.code_tap
                self._handles.append(tap.register_forward_hook(self._post(self.codes, i)))

    def _keep(self, store: dict[int, Tensor], i: int, t: Tensor) -> None:
        store[i] = t.detach() if self.detach else t

    def _pre(self, store: dict[int, Tensor], i: int) -> Any:
        return lambda module, args: self._keep(store, i, args[0])

    def _post(self, store: dict[int, Tensor], i: int) -> Any:
        return lambda module, args, output: self._keep(store, i, output)

    def remove(self) -> None:
        """Remove all hooks (the records are kept)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def clear(self) -> None:
        """Drop the records (the hooks stay)."""
        for store in (self.inputs, self.mssa_inputs, self.heads, self.codes, self.outputs):
            store.clear()

    def __enter__(self) -> CRATERecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def coding_rates(self, *, eps: float = 0.1, per_head: bool = False) -> Tensor:
        """Per-layer :func:`subspace_coding_rate` of the recorded MSSA inputs.

        Args:
            eps: :math:`\\varepsilon` (official protocol: 0.1, i.e. code ``eps = 0.01``).
            per_head: Keep the head dimension.

        Shape:
            - output: ``(L, B)``, or ``(L, B, K)`` with ``per_head=True``
        """
        missing = [i for i in range(len(self.layers)) if i not in self.mssa_inputs]
        if missing:
            raise RuntimeError(f"no MSSA inputs recorded for layers {missing}: run a forward pass")
        rates = []
        for i, layer in enumerate(self.layers):
            attn = layer.attn
            assert isinstance(attn, MSSA)
            x, bases = self.mssa_inputs[i], attn.subspaces().detach()
            rates.append(subspace_coding_rate(x, bases, eps=eps, per_head=per_head))
        return torch.stack(rates)

    def sparsities(self) -> Tensor:
        """Per-layer :func:`code_sparsity` ``(L_codes,)`` of the recorded ISTA codes, if any."""
        if not self.codes:
            raise RuntimeError("no ISTA codes recorded: run a forward pass through ISTA layers")
        return torch.stack([code_sparsity(self.codes[i]) for i in sorted(self.codes)])


def _crate_stacks(model: nn.Module) -> dict[str, nn.Module]:
    """``{"agg": model.aggregator, "pred": model.predictor}``, the parts that hold CRATE layers."""
    out = {}
    for key, name in (("agg", "aggregator"), ("pred", "predictor")):
        part = getattr(model, name, None)
        if isinstance(part, nn.Module) and any(isinstance(m, LAYER_TYPES) for m in part.modules()):
            out[key] = part
    return out


def _readout_action(actions: Tensor, key: str) -> Tensor:
    """The action a stack's read-out token is regressed on: ``a_1`` (aggregator), ``a_M``."""
    return actions[:, 0] if key == "agg" else actions[:, -1]


def _held_out_r2(h: Tensor, a: Tensor, ridge: float) -> Tensor:
    """:func:`head_action_r2` fitted on the first half of the samples, scored on the second."""
    half = h.shape[0] // 2
    return head_action_r2(
        h[:half], a[:half], ridge=ridge, eval_features=h[half:], eval_actions=a[half:]
    )


def weighted_specialization(head_r2: Tensor, scores: Tensor) -> float:
    r"""Mean specialisation over action coordinates, weighted by how well any head explains each.

    The weight is the best head's :math:`\max(R^2, 0)`, so that a coordinate no head explains
    (noise, where the scale-free score can be high) does not dominate; in ``[0, 1]``, 0 when no
    head explains anything. Derived.

    Args:
        head_r2: :math:`R^2` per head and action coordinate (:func:`head_action_r2`).
        scores: The specialisation score of each coordinate (:func:`specialization_score`).

    Shape:
        - head_r2: ``(K, A)``; scores: ``(A,)``
    """
    check_finite(
        check_floating_tensor(head_r2, "head_r2", min_ndim=2, shape_doc="(K, A)"), "head_r2"
    )
    check_finite(check_floating_tensor(scores, "scores", min_ndim=1, shape_doc="(A,)"), "scores")
    if head_r2.ndim != 2 or scores.shape != head_r2.shape[-1:]:
        raise ValueError(
            f"head_r2 must be (K, A) and scores (A,), got {tuple(head_r2.shape)} and "
            f"{tuple(scores.shape)}"
        )
    w = head_r2.double().clamp_min(0).max(dim=0).values
    total = float(w.sum())
    return float((w * scores.double()).sum() / total) if total > 0 else 0.0


class StackDiagnostics(NamedTuple):
    r"""Diagnostics of one CRATE stack of a model (means over the sequences measured).

    Attributes:
        rates: Per-layer :math:`R^c` of the tokens entering each MSSA, ``(L,)``.
        rates_std: Their standard deviation over sequences, ``(L,)``.
        sparsity: Per-layer fraction of zeros in the ISTA codes, ``(L,)``.
        head_r2: Per-layer, per-head held-out :math:`R^2` of the actions, ``(L, K, A)``.
        specialization: :func:`specialization_score` of ``head_r2``, ``(L, A)``.
        action: Which action was regressed: ``"a_1"`` (aggregator) or ``"a_M"`` (predictor).
        samples: Number of sequences.
        rate_max: The largest :math:`R^c` of these tokens, :math:`\tfrac{K}{2} \min(N, p) \log(1 +
            p / (N\varepsilon^2))` (derived).
    """

    rates: Tensor
    rates_std: Tensor
    sparsity: Tensor
    head_r2: Tensor
    specialization: Tensor
    action: str
    samples: int
    rate_max: float


@torch.no_grad()
def crate_stack_diagnostics(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    eps: float = 0.1,
    max_samples: int | None = 2048,
    ridge: float = 1e-3,
) -> dict[str, StackDiagnostics]:
    r"""Per-layer :math:`R^c`, ISTA sparsity and head specialisation of a model's CRATE stacks.

    The stacks are the ``aggregator`` (``"agg"``) and ``predictor`` (``"pred"``) holding CRATE
    layers; the model runs in eval mode without gradient. Head specialisation regresses the
    action (:math:`a_1` for the aggregator, :math:`a_M` for the predictor) on each head's output at
    the read-out token (token 0), fit on the first half of the sequences, scored on the second.

    Args:
        model: A module with ``aggregator`` / ``predictor`` parts, ``model(views, actions)``.
        loader: Batches with ``views`` ``(B, M+1, C, H, W)`` and ``actions`` ``(B, M, A)``.
        eps: :math:`\varepsilon` of :math:`R^c` (official protocol 0.1).
        max_samples: Stop after this many sequences (``None``: all).
        ridge: Ridge :math:`\rho > 0` of the per-head regressions (keeps the solve well posed).

    Returns:
        ``{"agg": ..., "pred": ...}`` for the stacks that contain CRATE layers (empty if none).

    Raises:
        ValueError: Fewer than 4 sequences (no held-out split).

    Shape:
        - output[s].rates: ``(L,)``; output[s].head_r2: ``(L, K, A)``
    """
    check_positive(eps, "eps")
    check_positive(ridge, "ridge")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if max_samples is not None:
        check_int(max_samples, "max_samples", minimum=1)
    stacks = _crate_stacks(model)
    if not stacks:
        return {}
    was_training = model.training
    model.eval()
    rates: dict[str, list[Tensor]] = {k: [] for k in stacks}
    zeros: dict[str, Tensor] = {}  # per layer: [number of zero codes, number of codes]
    heads: dict[str, list[list[Tensor]]] = {k: [] for k in stacks}
    actions: dict[str, list[Tensor]] = {k: [] for k in stacks}
    n_tokens: dict[str, int] = {}
    seen = 0
    recorders = {k: CRATERecorder(s) for k, s in stacks.items()}
    try:
        for batch in loader:
            b = batch.views.shape[0]
            if max_samples is not None:
                b = min(b, max_samples - seen)
                if b <= 0:
                    break
            model(batch.views[:b], batch.actions[:b])
            for key, rec in recorders.items():
                rates[key].append(rec.coding_rates(eps=eps)[:, :b].float().cpu())
                codes = [rec.codes[i][:b] for i in sorted(rec.codes)]
                z = torch.tensor([[int((c == 0).sum()), c.numel()] for c in codes]).double()
                zeros[key] = zeros[key] + z if key in zeros else z
                heads[key].append(
                    [rec.heads[i][:b, :, 0].float().cpu() for i in range(len(rec.layers))]
                )
                n_tokens[key] = int(rec.heads[0].shape[-2])
                actions[key].append(_readout_action(batch.actions[:b], key).float().cpu())
            seen += b
    finally:
        for rec in recorders.values():
            rec.remove()
        model.train(was_training)
    if seen < 4:
        raise ValueError(f"need at least 4 sequences for the held-out R², the loader gave {seen}")
    out = {}
    for key in stacks:
        r = torch.cat(rates[key], dim=1)  # (L, S), S = seen >= 4
        a = torch.cat(actions[key])
        per_layer = [torch.cat([h[i] for h in heads[key]]) for i in range(r.shape[0])]
        r2 = torch.stack([_held_out_r2(h, a, ridge) for h in per_layer]).float()
        (k, p), n = per_layer[0].shape[1:], n_tokens[key]
        out[key] = StackDiagnostics(
            rates=r.mean(dim=1),
            rates_std=r.std(dim=1),
            sparsity=(zeros[key][:, 0] / zeros[key][:, 1]).float(),
            head_r2=r2,
            specialization=specialization_score(r2),
            action="a_1" if key == "agg" else "a_M",
            samples=seen,
            rate_max=k * 0.5 * min(n, p) * math.log1p(p / (n * float(eps) ** 2)),
        )
    return out


def crate_monitor(
    batch: Any, *, eps: float = 0.1, ridge: float = 1e-3
) -> Callable[[nn.Module, int], dict[str, float]]:
    r"""An ``eval_fn`` for :func:`jepa_blocks.train.fit`: ranks and CRATE diagnostics on one batch.

    One forward pass on the fixed ``batch``. Keys: ``rank_z_agg``, ``rank_z`` (RankMe of
    :math:`z_\text{AGG}`, :math:`z_1`) and, per stack ``s`` (``agg``/``pred``) and layer ``i``,
    ``{s}_rate_{i}``, ``{s}_sparsity_{i}`` and, with at least 4 sequences, ``{s}_spec_{i}``
    (:func:`weighted_specialization`) and ``{s}_head_r2_{i}`` (best head's :math:`R^2`, mean over
    the action coordinates), held out as in :func:`crate_stack_diagnostics`.

    Args:
        batch: ``views`` ``(B, M+1, C, H, W)`` and ``actions`` ``(B, M, A)`` on the model's device.
        eps: :math:`\varepsilon` of :math:`R^c`.
        ridge: Ridge of the per-head regressions.

    Returns:
        ``eval_fn(model, epoch) → {name: value}`` (the model returns ``z_agg`` and ``z``).
    """
    check_positive(eps, "eps")
    check_positive(ridge, "ridge")
    if not (hasattr(batch, "views") and hasattr(batch, "actions")):
        raise TypeError(f"batch must have views and actions, got {type(batch).__name__}")

    def monitor(model: nn.Module, epoch: int) -> dict[str, float]:
        del epoch
        recorders = {k: CRATERecorder(s) for k, s in _crate_stacks(model).items()}
        try:
            out = model(batch.views, batch.actions)
        finally:
            for rec in recorders.values():
                rec.remove()
        b = batch.views.shape[0]
        metrics = {
            "rank_z_agg": effective_rank(out.z_agg.float()),
            "rank_z": effective_rank(out.z[:, 0].float()),
        }
        for key, rec in recorders.items():
            rates = rec.coding_rates(eps=eps)[:, :b].mean(dim=1)
            for i, r in enumerate(rates.tolist()):
                metrics[f"{key}_rate_{i}"] = r
            for i in sorted(rec.codes):
                metrics[f"{key}_sparsity_{i}"] = float((rec.codes[i][:b] == 0).float().mean())
            if b < 4:
                continue
            act = _readout_action(batch.actions[:b], key).float().cpu()
            for i in range(len(rec.layers)):
                r2 = _held_out_r2(rec.heads[i][:b, :, 0].float().cpu(), act, ridge)
                metrics[f"{key}_spec_{i}"] = weighted_specialization(r2, specialization_score(r2))
                metrics[f"{key}_head_r2_{i}"] = float(r2.max(dim=0).values.mean())
        return metrics

    return monitor
