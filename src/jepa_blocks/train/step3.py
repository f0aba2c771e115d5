r"""Step 3: CRATE inside seq-JEPA, its diagnostics, and step 1 / 2 / 3 side by side.

The follow-up repository ``kaikun213/seq-jepa`` plans (documents only, no code) a third step in
which CRATE blocks (Yu et al., NeurIPS 2023, "White-Box Transformers via Sparse Rate Reduction";
official code ``Ma-Lab-Berkeley/CRATE``) replace the aggregator or the predictor of seq-JEPA
(Ghaemi et al., 2025, arXiv:2505.03176). This module builds both integrations from parts, records
the CRATE diagnostics during and after training, plots them, and compares the steps on the same
data. ``examples/step3_crate.py`` is a thin command line over :func:`main`.

**Arms** (:data:`ARMS`), each a full training run on the same images, view sequences, data order,
probe sequences and seed (so the same encoder initialisation):

* ``step1``: seq-JEPA with its EMA teacher (variant ``baseline`` of
  :data:`jepa_blocks.train.experiment.VARIANTS`);
* ``step2``: the step-2 variant (default ``stopgrad-rate``: stop-gradient target plus the coding
  rate of :math:`z_\text{AGG}`);
* ``step3-agg`` (**integration A**): the step-2 model with the aggregator's transformer stack
  replaced by CRATE layers, ``Aggregator(dim, blocks=crate_blocks(...))`` (:func:`crate_aggregator`);
* ``step3-pred`` (**integration B**): the step-2 model with the MLP predictor replaced by the
  two-token :class:`~jepa_blocks.seq.crate_predictor.CRATEPredictor` (:func:`crate_predictor`);
* ``step3-both``: A and B together (not in the default list).

The parts are swapped by passing them to :class:`~jepa_blocks.SeqJEPA` (:func:`with_parts`); the
model has no switch for them.

**Diagnostics** (CRATE stacks, via :class:`~jepa_blocks.blocks.CRATERecorder`):

* per-layer compression :math:`R^c` of the tokens entering each layer's MSSA against that
  layer's subspaces (official ``vis_utils`` protocol, :func:`~jepa_blocks.blocks.subspace_coding_rate`;
  CRATE's claim is that it falls with depth in a trained model);
* ISTA output sparsity per layer (fraction of exact zeros);
* head specialisation: per-head held-out :math:`R^2` of the action coordinates from the
  per-head MSSA outputs at the read-out token ([AGG] for the aggregator, regressed on
  :math:`a_1` as the leakage probe does; the state token for the predictor, regressed on
  :math:`a_M`, the action it is conditioned on), summarised by
  :func:`~jepa_blocks.blocks.specialization_score` averaged over the action coordinates with
  weights :math:`\max_k R^2` (:func:`weighted_specialization`; derived metrics);

and for every arm the **rotation Δz spectrum**: the covariance spectrum of
:math:`\Delta z = f(R_{\theta_2} x) - f(R_{\theta_1} x)` on pure-rotation pairs of the test
images and the fraction of its variance in the top two components (a planar rotation acting on
a 2-D subspace gives 1; the motivation of step 3 is that after step 2 the rotation was spread
over ~30 dimensions).

During training the loop's ``eval_fn`` (:func:`make_monitor`) logs the effective ranks and the
per-layer :math:`R^c`, sparsity and head specialisation on a fixed test batch into the metrics
history (``metrics.jsonl`` / ``metrics.csv``; plotted by :func:`plot_monitor_history`); after
training :func:`crate_diagnostics` measures them on all test sequences, at initialisation and
after training.

Nothing heavy is imported at module import time (matplotlib, torchvision, PyYAML are imported by
the functions that need them).

**Experimental** (``__experimental__ = True``): this research-step module may change or be
removed in any release without a deprecation period; the API audit
(``tests/test_api_audit.py``) records it as experimental.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import torch
from einops import rearrange
from torch import Tensor, nn

from jepa_blocks._validation import check_choice, check_int, check_positive
from jepa_blocks.train.config import apply_overrides, config_from_dict, config_to_dict
from jepa_blocks.train.experiment import (
    VARIANTS,
    ExperimentConfig,
    ExperimentData,
    ModelConfig,
    build_data,
    build_model,
    evaluate,
    extract_features,
    load_experiment_config,
)
from jepa_blocks.train.loop import _schedule_steps, fit, resolve_device, seed_everything

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from jepa_blocks.data import SequenceLoader
    from jepa_blocks.seq import Aggregator, SeqJEPA
    from jepa_blocks.seq.crate_predictor import CRATEPredictor

__experimental__ = True

__all__ = [
    "ARMS",
    "DEFAULT_ARMS",
    "SMOKE_OVERRIDES",
    "Arm",
    "ArmResult",
    "CRATEConfig",
    "StackDiagnostics",
    "Step3Result",
    "build_arm_model",
    "crate_aggregator",
    "crate_diagnostics",
    "crate_predictor",
    "format_side_by_side",
    "main",
    "make_monitor",
    "plot_head_specialization",
    "plot_layer_profiles",
    "plot_monitor_history",
    "rotation_delta_spectrum",
    "run_step3",
    "table_rows",
    "weighted_specialization",
    "with_parts",
]

Integration = Literal["none", "aggregator", "predictor", "both"]
PathLike = str | os.PathLike[str]


class Arm(NamedTuple):
    """One column of the comparison.

    Attributes:
        step: ``"step1"``, ``"step2"`` or ``"step3"`` (recorded in the config).
        variant: A key of :data:`~jepa_blocks.train.experiment.VARIANTS`, or ``None`` for the
            variant chosen for steps 2 and 3 (default ``stopgrad-rate``).
        integration: Which parts are CRATE: ``"none"``, ``"aggregator"`` (A), ``"predictor"``
            (B) or ``"both"``.
    """

    step: str
    variant: str | None
    integration: Integration


#: The arms :func:`run_step3` knows.
ARMS: Mapping[str, Arm] = {
    "step1": Arm("step1", "baseline", "none"),
    "step2": Arm("step2", None, "none"),
    "step3-agg": Arm("step3", None, "aggregator"),
    "step3-pred": Arm("step3", None, "predictor"),
    "step3-both": Arm("step3", None, "both"),
}

#: The arms run by default.
DEFAULT_ARMS: tuple[str, ...] = ("step1", "step2", "step3-agg", "step3-pred")

#: Experiment overrides added after a preset's own ``smoke`` list by ``--smoke``, so that the four
#: default arms finish in under a minute on 2 CPU cores: no random-init evaluation (the
#: comparison is between the arms), no pixel baseline, closed-form (ridge) class probes, 3 training
#: steps, 256 test images.
SMOKE_OVERRIDES: tuple[str, ...] = (
    "eval.baseline=false",
    "eval.pixel_baseline=false",
    "eval.classifier=ridge",
    "train.max_steps=3",
    "data.test_subset=256",
)


@dataclasses.dataclass
class CRATEConfig:
    """CRATE parts and diagnostics of step 3.

    Attributes:
        layer: ``"crate"`` (:class:`~jepa_blocks.blocks.CRATELayer`, official CRATE) or
            ``"crate-alpha"`` (:class:`~jepa_blocks.blocks.CRATEAlphaLayer`).
        agg_depth: CRATE layers of the aggregator (``None``: ``model.depth``, the transformer's).
        agg_heads: MSSA subspaces of the aggregator (``None``: ``model.heads``).
        pred_dim: Token width of the CRATE predictor (``None``: ``model.encoder_dim``).
        pred_depth: CRATE layers of the predictor.
        pred_heads: MSSA subspaces of the predictor.
        pred_readout: ``"state"``, ``"concat"`` or ``"mean"``
            (:class:`~jepa_blocks.seq.crate_predictor.CRATEPredictor`).
        eta: ISTA step size (official 0.1).
        lambd: ISTA sparsity weight (official 0.1).
        tie_out: MSSA paper form (output through :math:`U^\\top`) instead of the official code's
            separate output projection.
        dropout: MSSA dropout (official 0).
        diag_eps: :math:`\\varepsilon` of the per-layer :math:`R^c` (official ``vis_utils``:
            :math:`\\varepsilon^2 = 0.01`).
        diag_samples: Test sequences used by the after-training diagnostics (at most).
        rotation_probe: Measure the rotation Δz spectrum.
        rotation_deg: Pure-rotation pairs draw both angles from ``±rotation_deg`` degrees
            (``None``: ``data.angle_deg``). Quarter turns for ``rotation90`` views.
    """

    layer: Literal["crate", "crate-alpha"] = "crate"
    agg_depth: int | None = None
    agg_heads: int | None = None
    pred_dim: int | None = None
    pred_depth: int = 2
    pred_heads: int = 4
    pred_readout: Literal["state", "concat", "mean"] = "state"
    eta: float = 0.1
    lambd: float = 0.1
    tie_out: bool = False
    dropout: float = 0.0
    diag_eps: float = 0.1
    diag_samples: int = 2048
    rotation_probe: bool = True
    rotation_deg: float | None = None


# --------------------------------------------------------------------------- parts


def _layer_class(crate: CRATEConfig) -> type[nn.Module]:
    from jepa_blocks.blocks import CRATEAlphaLayer, CRATELayer

    check_choice(crate.layer, "crate.layer", ("crate", "crate-alpha"))
    return CRATELayer if crate.layer == "crate" else CRATEAlphaLayer


def _layer_kwargs(crate: CRATEConfig) -> dict[str, Any]:
    return {
        "eta": crate.eta,
        "lambd": crate.lambd,
        "tie_out": crate.tie_out,
        "dropout": crate.dropout,
    }


def crate_aggregator(dim: int, crate: CRATEConfig, *, depth: int, heads: int) -> Aggregator:
    """Integration A: an :class:`~jepa_blocks.seq.Aggregator` over a CRATE layer stack.

    ``[AGG]`` token, ``depth`` CRATE layers (:func:`~jepa_blocks.blocks.crate_blocks`), final
    LayerNorm: the paper's aggregator with its transformer layers replaced.

    Args:
        dim: Token width ``D + E``.
        crate: Layer type and ISTA/MSSA settings (``agg_depth`` / ``agg_heads`` are not read;
            pass them as ``depth`` / ``heads``).
        depth: Number of layers.
        heads: MSSA subspaces per layer.

    Returns:
        The aggregator.

    Shape:
        - tokens: ``(B, N, dim)``
        - output: ``(B, dim)``
    """
    from jepa_blocks.blocks import crate_blocks
    from jepa_blocks.seq import Aggregator

    if not isinstance(crate, CRATEConfig):
        raise TypeError(f"crate must be a CRATEConfig, got {type(crate).__name__}")
    blocks = crate_blocks(
        dim=dim, depth=depth, heads=heads, layer=_layer_class(crate), **_layer_kwargs(crate)
    )
    return Aggregator(dim=dim, blocks=blocks)


def crate_predictor(
    *, in_dim: int, out_dim: int, action_embed_dim: int, crate: CRATEConfig
) -> CRATEPredictor:
    """Integration B: the two-token :class:`~jepa_blocks.seq.crate_predictor.CRATEPredictor`.

    Args:
        in_dim: Predictor input ``D + E`` (+ ``E`` when conditioned on the action).
        out_dim: ``D``.
        action_embed_dim: ``E`` of the action part of the input (0: unconditioned).
        crate: Token width, depth, heads, read-out and layer settings.

    Returns:
        The predictor.

    Shape:
        - input: ``(B, in_dim)``
        - output: ``(B, out_dim)``
    """
    from jepa_blocks.seq.crate_predictor import CRATEPredictor

    if not isinstance(crate, CRATEConfig):
        raise TypeError(f"crate must be a CRATEConfig, got {type(crate).__name__}")
    return CRATEPredictor(
        in_dim=in_dim,
        out_dim=out_dim,
        action_embed_dim=action_embed_dim,
        dim=crate.pred_dim,
        depth=crate.pred_depth,
        heads=crate.pred_heads,
        layer=_layer_class(crate),
        readout=crate.pred_readout,
        **_layer_kwargs(crate),
    )


def with_parts(
    model: SeqJEPA,
    *,
    aggregator: nn.Module | None = None,
    predictor: nn.Module | None = None,
) -> SeqJEPA:
    """A new :class:`~jepa_blocks.SeqJEPA` sharing ``model``'s parts, with some parts replaced.

    Encoder, target, action encoder, loss, target transform, regularizer and every option are
    taken from ``model`` (the same module objects, not copies); the constructor re-checks the
    dimensions of the new parts.

    Args:
        model: The model to take the other parts from.
        aggregator: Replacement aggregator (``None``: keep ``model.aggregator``).
        predictor: Replacement predictor (``None``: keep ``model.predictor``).

    Returns:
        The new model.
    """
    from jepa_blocks.seq import SeqJEPA

    if not isinstance(model, SeqJEPA):
        raise TypeError(f"model must be a SeqJEPA, got {type(model).__name__}")
    return SeqJEPA(
        encoder=model.encoder,
        target=model.target,
        action_encoder=model.action_encoder,
        aggregator=model.aggregator if aggregator is None else aggregator,
        predictor=model.predictor if predictor is None else predictor,
        loss=model.loss_fn,
        target_transform=model.target_transform,
        regularizer=model.regularizer,
        regularize_on=model.regularize_on,
        regularizer_weight=model.regularizer_weight,
        regularizer_warmup_steps=model.regularizer_warmup_steps,
        condition_tokens=model.condition_tokens,
        condition_predictor=model.condition_predictor,
        last_token_action=model.last_token_action,
        predictor_action=model.predictor_action,
        symmetric=model.symmetric,
        invert_action=model.invert_action,
    )


def build_arm_model(
    config: ModelConfig,
    crate: CRATEConfig,
    *,
    integration: Integration,
    in_channels: int,
    action_dim: int,
    total_steps: int,
    steps_per_epoch: int,
) -> SeqJEPA:
    """:func:`~jepa_blocks.train.experiment.build_model`, then the CRATE parts of ``integration``.

    The encoder (and the rest) is initialised first, exactly as for steps 1 and 2, so arms run
    with the same seed start from the same encoder.

    Args:
        config: The model config (target, regularizer, widths).
        crate: The CRATE settings.
        integration: ``"none"``, ``"aggregator"`` (A), ``"predictor"`` (B) or ``"both"``.
        in_channels: Image channels.
        action_dim: ``A``.
        total_steps: Optimizer steps of the run.
        steps_per_epoch: Optimizer steps per epoch.

    Returns:
        The model.
    """
    from jepa_blocks.seq import SeqJEPA

    check_choice(integration, "integration", ("none", "aggregator", "predictor", "both"))
    if not isinstance(crate, CRATEConfig):
        raise TypeError(f"crate must be a CRATEConfig, got {type(crate).__name__}")
    model = build_model(
        config,
        in_channels=in_channels,
        action_dim=action_dim,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
    )
    if not isinstance(model, SeqJEPA):
        raise TypeError(f"build_model returned {type(model).__name__}, not a SeqJEPA")
    if integration == "none":
        return model
    e = config.action_embed_dim
    width = config.encoder_dim + e
    aggregator = predictor = None
    if integration in ("aggregator", "both"):
        aggregator = crate_aggregator(
            width,
            crate,
            depth=crate.agg_depth if crate.agg_depth is not None else config.depth,
            heads=crate.agg_heads if crate.agg_heads is not None else config.heads,
        )
    if integration in ("predictor", "both"):
        predictor = crate_predictor(
            in_dim=width + e, out_dim=config.encoder_dim, action_embed_dim=e, crate=crate
        )
    return with_parts(model, aggregator=aggregator, predictor=predictor)


# --------------------------------------------------------------------------- diagnostics


def _has_crate(module: nn.Module) -> bool:
    from jepa_blocks.blocks import CRATEAlphaLayer, CRATEDecoderLayer, CRATELayer

    return any(
        isinstance(m, (CRATELayer, CRATEAlphaLayer, CRATEDecoderLayer)) for m in module.modules()
    )


def _stacks(model: nn.Module) -> dict[str, nn.Module]:
    """The CRATE stacks of a SeqJEPA: ``{"agg": aggregator, "pred": predictor}`` where CRATE."""
    out = {}
    for key, name in (("agg", "aggregator"), ("pred", "predictor")):
        part = getattr(model, name, None)
        if isinstance(part, nn.Module) and _has_crate(part):
            out[key] = part
    return out


#: Ridge of the per-head regressions of :func:`make_monitor` (as :func:`crate_diagnostics`).
_MONITOR_RIDGE = 1e-3


def make_monitor(batch: Any, *, eps: float = 0.1) -> Callable[[nn.Module, int], dict[str, float]]:
    """The loop's ``eval_fn``: effective ranks and per-layer CRATE diagnostics on one batch.

    One forward pass of the model (in eval mode, no gradient, as :func:`~jepa_blocks.train.fit`
    calls it) on the fixed ``batch``. Logged keys (``eval/`` prefixed by the loop):
    ``rank_z_agg``, ``rank_z`` (RankMe of :math:`z_\\text{AGG}` and :math:`z_1`, as the step 1/2
    monitor) and, for each CRATE stack ``s`` in ``agg`` / ``pred`` and layer ``i``,
    ``{s}_rate_{i}`` (mean :math:`R^c` over the batch), ``{s}_sparsity_{i}`` and, when the batch
    holds at least 4 sequences, the head specialisation of :func:`crate_diagnostics` measured on
    the batch: ``{s}_spec_{i}`` (:func:`weighted_specialization` of the held-out per-head
    :math:`R^2`, ridge fitted on the first half of the batch, scored on the second) and
    ``{s}_head_r2_{i}`` (the best head's :math:`R^2`, averaged over the action coordinates).

    Args:
        batch: A :class:`~jepa_blocks.data.ViewSequence` with ``views`` ``(B, M+1, C, H, W)``
            and ``actions`` ``(B, M, A)``, already on the model's device.
        eps: :math:`\\varepsilon` of :math:`R^c`.

    Returns:
        ``eval_fn(model, epoch) → {name: value}``.
    """
    check_positive(eps, "eps")

    def monitor(model: nn.Module, epoch: int) -> dict[str, float]:
        from jepa_blocks.blocks import CRATERecorder, specialization_score
        from jepa_blocks.metrics import effective_rank

        del epoch
        recorders = {k: CRATERecorder(s) for k, s in _stacks(model).items()}
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
            half = b // 2
            act = (batch.actions[:b, 0] if key == "agg" else batch.actions[:b, -1]).float().cpu()
            for i in range(len(rec.layers)):
                h = rec.heads[i][:b, :, 0].float().cpu()
                r2 = _heldout_r2(h[:half], act[:half], h[half:], act[half:], _MONITOR_RIDGE)
                metrics[f"{key}_spec_{i}"] = weighted_specialization(r2, specialization_score(r2))
                metrics[f"{key}_head_r2_{i}"] = float(r2.max(dim=0).values.mean())
        return metrics

    return monitor


class StackDiagnostics(NamedTuple):
    """After-training diagnostics of one CRATE stack (means over the test sequences).

    Attributes:
        rates: Per-layer :math:`R^c` of the tokens entering each MSSA, ``(L,)``.
        rates_std: Their standard deviation over sequences, ``(L,)``.
        sparsity: Per-layer fraction of zeros in the ISTA codes, ``(L,)``.
        head_r2: Per-layer, per-head held-out :math:`R^2` of the action coordinates from the
            per-head MSSA outputs at the read-out token, ``(L, K, A)``.
        specialization: :func:`~jepa_blocks.blocks.specialization_score` of ``head_r2``,
            ``(L, A)``.
        action: Which action was regressed: ``"a_1"`` (aggregator) or ``"a_M"`` (predictor).
        samples: Number of sequences.
        rate_max: The largest value :math:`R^c` can take on these tokens,
            :math:`K \\cdot \\tfrac{n}{2} \\log(1 + p / (N\\varepsilon^2))` with
            :math:`n = \\min(N, p)` (unit-norm tokens, mutually orthogonal within every head;
            derived), for reading ``rates``.
    """

    rates: Tensor
    rates_std: Tensor
    sparsity: Tensor
    head_r2: Tensor
    specialization: Tensor
    action: str
    samples: int
    rate_max: float


def _rate_max(k: int, p: int, n: int, eps2: float) -> float:
    """Upper bound of the per-sample R^c of ``n`` unit-norm tokens in ``k`` heads of width ``p``."""
    return k * 0.5 * min(n, p) * math.log1p(p / (n * eps2))


def _heldout_r2(
    h_fit: Tensor, a_fit: Tensor, h_eval: Tensor, a_eval: Tensor, ridge: float
) -> Tensor:
    """Per-head held-out R² ``(K, A)`` of ridge regressions ``(S, K, p) → (S, A)``, in float64."""
    h = rearrange(h_fit.double(), "s k p -> k s p")
    he = rearrange(h_eval.double(), "s k p -> k s p")
    a, ae = a_fit.double(), a_eval.double()
    mu_h, mu_a = h.mean(dim=1, keepdim=True), a.mean(dim=0)
    hc = h - mu_h
    eye = torch.eye(h.shape[-1], dtype=h.dtype)
    beta = torch.linalg.solve(hc.mT @ hc + ridge * eye, hc.mT @ (a - mu_a))  # (K, p, A)
    pred = (he - mu_h) @ beta + mu_a  # (K, S_eval, A)
    sse = (ae - pred).pow(2).sum(dim=1)
    sst = (ae - ae.mean(dim=0)).pow(2).sum(dim=0)
    safe = torch.where(sst > 0, sst, torch.ones_like(sst))
    return torch.where(sst > 0, 1.0 - sse / safe, torch.zeros_like(sse))


@torch.no_grad()
def crate_diagnostics(
    model: nn.Module,
    loader: Any,
    *,
    eps: float = 0.1,
    max_samples: int | None = 2048,
    ridge: float = 1e-3,
) -> dict[str, StackDiagnostics]:
    """Per-layer :math:`R^c`, ISTA sparsity and head specialisation of a model's CRATE stacks.

    Runs the model (eval mode, no gradient) on the loader's sequences with a
    :class:`~jepa_blocks.blocks.CRATERecorder` on each CRATE stack. Head specialisation regresses
    the action coordinates on each head's MSSA output at the read-out token (token 0: [AGG] for
    the aggregator, regressed on :math:`a_1`; the state token for the predictor, regressed on
    :math:`a_M`). The :math:`R^2` are **held out**: a ridge regression per head and layer is fit
    on the first half of the sequences and scored on the second half (in-sample :math:`R^2`
    with ``p`` features per head would be biased upwards by about ``p / samples``).

    Args:
        model: A :class:`~jepa_blocks.SeqJEPA`.
        loader: Batches with ``views`` ``(B, M+1, C, H, W)`` and ``actions`` ``(B, M, A)``,
            e.g. a :class:`~jepa_blocks.data.SequenceLoader`.
        eps: :math:`\\varepsilon` of :math:`R^c` (official protocol 0.1).
        max_samples: Stop after this many sequences (``None``: all).
        ridge: Ridge :math:`\\rho > 0` of the per-head regressions (the small default only keeps
            the solve well posed).

    Returns:
        ``{"agg": ..., "pred": ...}`` for the stacks that contain CRATE layers (empty if none).

    Shape:
        - output[s].rates: ``(L,)``; output[s].head_r2: ``(L, K, A)``
    """
    from jepa_blocks.blocks import CRATERecorder, specialization_score

    check_positive(eps, "eps")
    check_positive(ridge, "ridge")
    if max_samples is not None:
        check_int(max_samples, "max_samples", minimum=1)
    stacks = _stacks(model)
    if not stacks:
        return {}
    was_training = model.training
    model.eval()
    rates: dict[str, list[Tensor]] = {k: [] for k in stacks}
    zeros: dict[str, Tensor] = {}
    counts: dict[str, Tensor] = {}
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
                z = torch.stack([(c == 0).sum().double().cpu() for c in codes])
                n = torch.tensor([float(c.numel()) for c in codes], dtype=torch.float64)
                zeros[key] = zeros[key] + z if key in zeros else z
                counts[key] = counts[key] + n if key in counts else n
                heads[key].append(
                    [rec.heads[i][:b, :, 0].float().cpu() for i in range(len(rec.layers))]
                )
                n_tokens[key] = int(rec.heads[0].shape[-2])
                a = batch.actions[:b, 0] if key == "agg" else batch.actions[:b, -1]
                actions[key].append(a.float().cpu())
            seen += b
    finally:
        for rec in recorders.values():
            rec.remove()
        model.train(was_training)
    if seen < 4:
        raise ValueError(f"need at least 4 sequences for the held-out R², the loader gave {seen}")
    half = seen // 2
    out = {}
    eps2 = float(eps) ** 2
    for key in stacks:
        r = torch.cat(rates[key], dim=1)  # (L, S)
        n_layers = r.shape[0]
        a = torch.cat(actions[key])
        per_layer = [torch.cat([h[i] for h in heads[key]]) for i in range(n_layers)]
        r2 = torch.stack(
            [_heldout_r2(h[:half], a[:half], h[half:], a[half:], ridge) for h in per_layer]
        ).float()
        out[key] = StackDiagnostics(
            rates=r.mean(dim=1),
            rates_std=r.std(dim=1) if r.shape[1] > 1 else torch.zeros(n_layers),
            sparsity=(zeros[key] / counts[key]).float(),
            head_r2=r2,
            specialization=specialization_score(r2),
            action="a_1" if key == "agg" else "a_M",
            samples=seen,
            rate_max=_rate_max(
                int(per_layer[0].shape[1]), int(per_layer[0].shape[2]), n_tokens[key], eps2
            ),
        )
    return out


@torch.no_grad()
def rotation_delta_spectrum(
    model: nn.Module,
    source: Any,
    *,
    angle_deg: float = 75.0,
    discrete: bool = False,
    batch_size: int = 500,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> Tensor:
    r"""Covariance spectrum of :math:`\Delta z` on pure-rotation pairs of ``source``'s images.

    Each image gives two views rotated by independent angles from :math:`\pm` ``angle_deg``
    (bilinear; or independent quarter turns with ``discrete=True``), both encoded by the online
    encoder (eval mode); :math:`\Delta z = z_2 - z_1`. A representation in which rotation acts on
    its own 2-D subspace puts all of the variance of :math:`\Delta z` in the top two components
    (:func:`~jepa_blocks.metrics.topk_variance_fraction` ``(spectrum, 2)`` = 1).

    Args:
        model: A :class:`~jepa_blocks.SeqJEPA` (its ``encode`` is used).
        source: Labelled images (:class:`~jepa_blocks.data.LabelledImages`).
        angle_deg: Angle range in degrees (continuous rotations).
        discrete: Quarter turns instead of continuous angles.
        batch_size: Images per forward pass.
        seed: Seed of the angles.
        device: Where to run.

    Returns:
        The eigenvalues of the covariance of :math:`\Delta z`, descending.

    Shape:
        - output: ``(D,)``
    """
    from jepa_blocks.data import SequenceLoader, rotation_views
    from jepa_blocks.metrics import delta_spectrum

    check_positive(angle_deg, "angle_deg")
    angle = math.radians(angle_deg)
    views = rotation_views(discrete=discrete, angle_range=(-angle, angle))
    loader = SequenceLoader(
        source,
        views,
        num_observed=1,
        batch_size=batch_size,
        device=device,
        shuffle=False,
        seed=seed,
    )
    was_training = model.training
    model.eval()
    z1, z2 = [], []
    try:
        for batch in loader:
            z = model.encode(batch.views)  # type: ignore[operator]
            z1.append(z[:, 0].float().cpu())
            z2.append(z[:, 1].float().cpu())
    finally:
        model.train(was_training)
    return delta_spectrum(torch.cat(z1), torch.cat(z2))


def _rotation_metrics(spectrum: Tensor) -> dict[str, float]:
    from jepa_blocks.metrics import topk_variance_fraction

    sv = spectrum.double().clamp_min(0).sqrt()  # singular values of the centred Δz, up to scale
    p = sv / sv.sum() if float(sv.sum()) > 0 else sv
    nz = p[p > 0]
    return {
        "rot_delta_top2": topk_variance_fraction(spectrum, 2),
        "rot_delta_rank": float(torch.exp(-(nz * nz.log()).sum())) if nz.numel() else 0.0,
    }


def weighted_specialization(head_r2: Tensor, scores: Tensor) -> float:
    """Mean specialisation over action coordinates, weighted by how well any head explains each.

    :func:`~jepa_blocks.blocks.specialization_score` is scale-free, so a coordinate that no head
    explains (all :math:`R^2 \\approx 0`, noise) can score high; weighting each coordinate by its
    best head's :math:`\\max_k \\max(R^2_{kj}, 0)` keeps such coordinates from dominating
    (derived summary).

    Args:
        head_r2: :math:`R^2` per head and action coordinate.
        scores: The specialisation score of each coordinate.

    Returns:
        The weighted mean, in ``[0, 1]`` (0 when no head explains anything).

    Shape:
        - head_r2: ``(K, A)``
        - scores: ``(A,)``
    """
    w = head_r2.double().clamp_min(0).max(dim=0).values
    total = float(w.sum())
    return float((w * scores.double()).sum() / total) if total > 0 else 0.0


def _diag_metrics(diag: Mapping[str, StackDiagnostics]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, d in diag.items():
        out[f"{key}_rates"] = d.rates.tolist()
        out[f"{key}_rates_std"] = d.rates_std.tolist()
        out[f"{key}_rate_max"] = d.rate_max
        out[f"{key}_sparsity_layers"] = d.sparsity.tolist()
        out[f"{key}_sparsity"] = float(d.sparsity.mean())
        out[f"{key}_head_r2"] = d.head_r2.tolist()
        layers = [weighted_specialization(r2, sp) for r2, sp in zip(d.head_r2, d.specialization)]
        out[f"{key}_specialization_layers"] = layers
        out[f"{key}_specialization"] = layers[-1]
        out[f"{key}_specialization_per_dim"] = d.specialization[-1].tolist()
        out[f"{key}_head_r2_max"] = float(d.head_r2[-1].max(dim=0).values.mean())
        out[f"{key}_action"] = d.action
    return out


# --------------------------------------------------------------------------- plots


def _finish(fig: Figure, path: PathLike | None) -> Figure:
    fig.tight_layout()
    if path is not None:
        fig.savefig(os.fspath(path), dpi=120, format="png")
    return fig


def plot_layer_profiles(
    profiles: Mapping[str, Sequence[float]],
    *,
    ylabel: str,
    path: PathLike | None = None,
    title: str = "",
) -> Figure:
    """Per-layer curves (e.g. :math:`R^c` or sparsity by layer); labels ending in ``init`` dashed.

    Args:
        profiles: ``{label: one value per layer}``.
        ylabel: The y-axis label.
        path: Save the figure there as PNG.
        title: Axes title.

    Returns:
        The figure.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    if not profiles:
        raise ValueError("profiles must hold at least one curve")
    fig = Figure(figsize=(5.0, 3.5))
    ax = fig.add_subplot()
    for label, values in profiles.items():
        ys = [float(v) for v in values]
        style = "--" if label.endswith("init") else "-"
        ax.plot(range(len(ys)), ys, style, marker="o", markersize=4, label=label)
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize="small")
    ax.set_title(title)
    return _finish(fig, path)


def plot_head_specialization(
    head_r2: Tensor,
    *,
    action_names: Sequence[str] | None = None,
    path: PathLike | None = None,
    title: str = "Per-head R² of the action",
) -> Figure:
    """Heatmap of per-head :math:`R^2` (heads × action coordinates) of one layer.

    Args:
        head_r2: :math:`R^2` of each head and action coordinate.
        action_names: Column labels.
        path: Save the figure there as PNG.
        title: Axes title.

    Returns:
        The figure.

    Shape:
        - head_r2: ``(K, A)``
    """
    from matplotlib.figure import Figure

    if not isinstance(head_r2, Tensor) or head_r2.ndim != 2:
        raise ValueError(
            f"head_r2 must be a (K, A) tensor, got {getattr(head_r2, 'shape', head_r2)}"
        )
    k, a = head_r2.shape
    if action_names is not None and len(action_names) != a:
        raise ValueError(f"action_names must have {a} names, got {len(action_names)}")
    fig = Figure(figsize=(1.2 + 0.8 * a, 1.0 + 0.5 * k))
    ax = fig.add_subplot()
    im = ax.imshow(
        head_r2.detach().float().clamp(0, 1).cpu().numpy(), vmin=0, vmax=1, cmap="viridis"
    )
    fig.colorbar(im, ax=ax, label="R²")
    ax.set_yticks(range(k), [f"head {i}" for i in range(k)])
    ax.set_xticks(range(a), list(action_names) if action_names else [str(j) for j in range(a)])
    for i in range(k):
        for j in range(a):
            v = float(head_r2[i, j])
            ax.text(
                j,
                i,
                f"{v:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if v < 0.5 else "black",
            )
    ax.set_title(title, fontsize="medium")
    return _finish(fig, path)


def plot_monitor_history(
    history: Sequence[Mapping[str, Any]],
    *,
    path: PathLike | None = None,
    title: str = "CRATE diagnostics during training",
) -> Figure | None:
    """Per-layer :math:`R^c`, sparsity and head specialisation logged by :func:`make_monitor`.

    One panel per quantity against the step: :math:`R^c` (``eval/{s}_rate_{i}``), ISTA
    sparsity (``eval/{s}_sparsity_{i}``) and, when logged, head specialisation
    (``eval/{s}_spec_{i}``, solid) with the best head's :math:`R^2` (``eval/{s}_head_r2_{i}``,
    dashed).

    Args:
        history: The loop's history (records with ``eval/{s}_rate_{i}`` keys).
        path: Save the figure there as PNG.
        title: Figure title.

    Returns:
        The figure, or ``None`` when the history holds no CRATE records.
    """
    from matplotlib.figure import Figure

    kinds = (
        ("_rate_", "R^c of the MSSA input tokens"),
        ("_sparsity_", "ISTA sparsity (fraction of zeros)"),
        ("_spec_", "head specialisation (—), best head R² (- -)"),
    )
    evals = [r for r in history if any(str(k).startswith("eval/") for k in r)]
    keys = sorted({k for r in evals for k in r if any(m in k for m, _ in kinds)})
    if not any("_rate_" in k or "_sparsity_" in k for k in keys):
        return None
    r2_keys = sorted({k for r in evals for k in r if "_head_r2_" in k})
    panels = [(m, y) for m, y in kinds if any(m in k for k in keys) or (m == "_spec_" and r2_keys)]
    fig = Figure(figsize=(4.5 * len(panels), 3.5))
    axes = dict(zip((m for m, _ in panels), fig.subplots(1, len(panels), squeeze=False)[0]))
    for k in [*keys, *r2_keys]:
        pts = [(float(r["step"]), float(r[k])) for r in evals if k in r]
        marker = next((m for m, _ in panels if m in k), "_spec_")
        dashed = "_head_r2_" in k
        label = k.removeprefix("eval/")
        for m in ("_rate_", "_sparsity_", "_spec_", "_head_r2_"):
            label = label.replace(m, " layer ")
        axes[marker].plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            "--" if dashed else "-",
            marker="o",
            markersize=3,
            label=label + (" R²" if dashed else ""),
        )
    for m, ylabel in panels:
        axes[m].set_ylabel(ylabel)
        axes[m].set_xlabel("step")
        axes[m].legend(fontsize="x-small")
    fig.suptitle(title)
    return _finish(fig, path)


# --------------------------------------------------------------------------- table

_ROWS: tuple[tuple[str, str, str], ...] = (
    ("linacc", "linacc(z_agg), test", "pct"),
    ("r2", "R² of a_1 from [z_1; z_2]", "num"),
    ("leakage_linacc", "leakage: linacc(z_1)", "pct"),
    ("leakage_r2", "leakage: R² of a_1 from z_agg", "num"),
    ("linacc_gap", "linacc gap (z_agg − z_1)", "pct"),
    ("r2_gap", "R² gap ([z_1;z_2] − z_agg)", "num"),
    ("rank_z_agg", "effective rank z_agg", "rank"),
    ("rank_z", "effective rank z", "rank"),
    ("rot_delta_top2", "rotation Δz: top-2 variance", "pct"),
    ("rot_delta_rank", "rotation Δz: effective rank", "num1"),
    ("agg_sparsity", "ISTA sparsity, aggregator", "pct"),
    ("pred_sparsity", "ISTA sparsity, predictor", "pct"),
    ("agg_rates", "R^c by layer / max, aggregator", "rates"),
    ("pred_rates", "R^c by layer / max, predictor", "rates"),
    ("agg_specialization", "head specialisation, agg (a_1)", "num"),
    ("pred_specialization", "head specialisation, pred (a_M)", "num"),
    ("init/linacc", "at init: linacc(z_agg)", "pct"),
    ("init/r2", "at init: R² of a_1", "num"),
    ("init/rot_delta_top2", "at init: rotation Δz top-2", "pct"),
)

#: Metrics of the random-init network shown by :func:`table_rows` (as ``init/<key>``).
_INIT_KEYS = ("linacc", "r2", "rot_delta_top2")


def table_rows(arm: ArmResult) -> dict[str, Any]:
    """The metrics of one arm for :func:`format_side_by_side`, random-init ones as ``init/<key>``.

    Args:
        arm: A result of :func:`run_step3`.

    Returns:
        ``arm.metrics`` plus ``init/linacc``, ``init/r2``, ``init/rot_delta_top2`` when the
        random-init network was measured.
    """
    rows = dict(arm.metrics)
    if arm.random_init is not None:
        rows.update({f"init/{k}": arm.random_init[k] for k in _INIT_KEYS if k in arm.random_init})
    return rows


def _fmt(metrics: Mapping[str, Any], key: str, kind: str) -> str:
    if key not in metrics or metrics[key] is None:
        return "—"
    v = metrics[key]
    if kind == "rates":
        cell = " → ".join(f"{float(x):.1f}" for x in v)
        top = metrics.get(key.replace("_rates", "_rate_max"))
        return cell if top is None else f"{cell} / {float(top):.1f}"
    v = float(v)
    if not math.isfinite(v):
        return "nan"
    if kind == "pct":
        return f"{100 * v:.1f} %"
    if kind == "num1":
        return f"{v:.1f}"
    if kind == "rank":
        dim = metrics.get("dim_z_agg" if key == "rank_z_agg" else "dim_z")
        return f"{v:.1f} / {dim}" if dim else f"{v:.1f}"
    return f"{v:.3f}"


def format_side_by_side(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown table: one row per metric, one column per arm.

    Rows: the probe metrics of :func:`~jepa_blocks.train.experiment.evaluate` (linacc, R²,
    leakage and gaps, effective ranks), the rotation Δz top-2 variance fraction and effective
    rank, for CRATE stacks the mean ISTA sparsity, :math:`R^c` by layer (first → last, then its
    upper bound) and the last layer's head specialisation, and the random-init values of
    :func:`table_rows`. Missing values print as ``—``.

    Args:
        results: ``{arm: metrics}``.

    Returns:
        The table.
    """
    if not results:
        raise ValueError("results must hold at least one arm")
    names = list(results)
    rows = [("metric", *names)]
    for key, label, kind in _ROWS:
        if not any(key in m for m in results.values()):
            continue
        rows.append((label, *(_fmt(results[n], key, kind) for n in names)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, r in enumerate(rows):
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        lines.append("| " + " | ".join(cells) + " |")
        if j == 0:
            lines.append(
                "| "
                + " | ".join(["-" * widths[0]] + ["-" * (w - 1) + ":" for w in widths[1:]])
                + " |"
            )
    return "\n".join(lines)


# --------------------------------------------------------------------------- runs


@dataclasses.dataclass
class ArmResult:
    """One arm of :func:`run_step3`.

    Attributes:
        name: The arm (a key of :data:`ARMS`).
        config: Its experiment config.
        metrics: Final test metrics (probes, rotation Δz, CRATE diagnostics).
        random_init: The same for the network at initialisation (``None`` if not measured).
        history: The loop's metrics history.
        seconds: ``{"train", "eval"}`` wall times.
        parameters: Trainable parameters.
    """

    name: str
    config: ExperimentConfig
    metrics: dict[str, Any]
    random_init: dict[str, Any] | None
    history: list[dict[str, Any]]
    seconds: dict[str, float]
    parameters: int


@dataclasses.dataclass
class Step3Result:
    """What :func:`run_step3` returns.

    Attributes:
        arms: ``{arm: ArmResult}`` in run order.
        table: The side-by-side table.
        out_dir: Where ``step3.json``, ``table.md`` and the plots went (``None``: nowhere).
        plots: File names of the plots.
        seconds: Total wall time.
    """

    arms: dict[str, ArmResult]
    table: str
    out_dir: Path | None
    plots: list[str]
    seconds: float


def _loader(
    source: Any,
    data: ExperimentData,
    *,
    m: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    shuffle: bool,
) -> SequenceLoader:
    from jepa_blocks.data import SequenceLoader

    return SequenceLoader(
        source,
        data.views,
        num_observed=m,
        batch_size=batch_size,
        device=device,
        shuffle=shuffle,
        drop_last=shuffle and len(source) > batch_size,
        seed=seed,
    )


def _subset(source: Any, n: int) -> Any:
    if n >= len(source):
        return source
    order = torch.randperm(len(source), generator=torch.Generator().manual_seed(2))
    return source.subset(order[:n].sort().values)


def _arm_config(
    name: str,
    *,
    preset: str | os.PathLike[str],
    config_dir: PathLike,
    config_file: PathLike | None,
    variant: str,
    smoke: bool,
    overrides: Sequence[str],
) -> ExperimentConfig:
    arm = ARMS[name]
    v = arm.variant if arm.variant is not None else variant
    extra = list(SMOKE_OVERRIDES) if smoke else []
    return load_experiment_config(
        preset=preset,
        config_dir=config_dir,
        config_file=config_file,
        variant=v,
        smoke=smoke,
        overrides=[f"step={arm.step}", *extra, *overrides],
    )


def _measure(
    model: nn.Module,
    probe_train: Any,
    probe_test: Any,
    data: ExperimentData,
    config: ExperimentConfig,
    crate: CRATEConfig,
    device: torch.device,
    pixels: bool = False,
) -> tuple[dict[str, Any], dict[str, StackDiagnostics], Tensor | None]:
    passes = config.eval.train_sequences_per_image
    test_feats = extract_features(model, probe_test, pixels=pixels)
    train_feats = extract_features(model, probe_train, passes=passes, pixels=pixels)
    metrics = evaluate(train_feats, test_feats, config.eval)
    probe_test.set_epoch(0)
    diag = crate_diagnostics(model, probe_test, eps=crate.diag_eps, max_samples=crate.diag_samples)
    metrics.update(_diag_metrics(diag))
    spectrum = None
    if crate.rotation_probe:
        deg = crate.rotation_deg if crate.rotation_deg is not None else config.data.angle_deg
        spectrum = rotation_delta_spectrum(
            model,
            data.test,
            angle_deg=deg,
            discrete=config.data.views == "rotation90",
            batch_size=config.eval.batch_size,
            seed=config.eval.seed + 2,
            device=device,
        )
        metrics.update(_rotation_metrics(spectrum))
        metrics["rot_delta_spectrum"] = spectrum.tolist()
    return metrics, diag, spectrum


def _run_arm(
    name: str,
    config: ExperimentConfig,
    crate: CRATEConfig,
    data: ExperimentData,
    out_dir: Path | None,
    say: Callable[..., None],
) -> tuple[ArmResult, dict[str, Any]]:
    arm = ARMS[name]
    device = resolve_device(config.train.device)
    seed_everything(config.train.seed)
    loader = _loader(
        data.train,
        data,
        m=config.data.num_observed,
        batch_size=config.data.batch_size,
        seed=config.train.seed,
        device=device,
        shuffle=True,
    )
    steps_per_epoch = len(loader)
    total_steps, _ = _schedule_steps(loader, config.train)
    model = build_arm_model(
        config.model,
        crate,
        integration=arm.integration,
        in_channels=int(data.train.images.shape[1]),
        action_dim=int(data.views.action_dim),
        total_steps=max(1, total_steps),
        steps_per_epoch=steps_per_epoch,
    ).to(device)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    say(
        f"[{name}] {config.step}/{config.variant}, CRATE parts: {arm.integration}, "
        f"{n_params / 1e6:.2f} M parameters, {total_steps} steps on {device}"
    )
    m_val = config.eval.num_observed or config.data.num_observed
    bs = config.eval.batch_size
    probe_train = _loader(
        data.train,
        data,
        m=m_val,
        batch_size=bs,
        seed=config.eval.seed,
        device=device,
        shuffle=False,
    )
    probe_test = _loader(
        data.test,
        data,
        m=m_val,
        batch_size=bs,
        seed=config.eval.seed + 1,
        device=device,
        shuffle=False,
    )
    monitor_src = _subset(data.test, config.eval.monitor_size)
    monitor_batch = next(
        iter(
            _loader(
                monitor_src,
                data,
                m=m_val,
                batch_size=len(monitor_src),
                seed=7,
                device=device,
                shuffle=False,
            )
        )
    )
    monitor = make_monitor(monitor_batch, eps=crate.diag_eps)

    extras: dict[str, Any] = {}
    random_metrics: dict[str, Any] | None = None
    t_eval = 0.0
    t1 = time.perf_counter()
    if config.eval.baseline:
        random_metrics, diag0, spec0 = _measure(
            model, probe_train, probe_test, data, config, crate, device
        )
        extras["init_diag"], extras["init_spectrum"] = diag0, spec0
    else:
        probe_test.set_epoch(0)
        extras["init_diag"] = crate_diagnostics(
            model, probe_test, eps=crate.diag_eps, max_samples=crate.diag_samples
        )
    t_eval += time.perf_counter() - t1

    arm_dir = out_dir / name if out_dir is not None else None
    train_cfg = dataclasses.replace(config.train, out_dir=str(arm_dir) if arm_dir else None)
    t1 = time.perf_counter()
    fit_result = fit(model, loader, train_cfg, eval_fn=monitor, full_config=config_to_dict(config))
    t_train = time.perf_counter() - t1

    t1 = time.perf_counter()
    metrics, diag, spectrum = _measure(
        fit_result.model,
        probe_train,
        probe_test,
        data,
        config,
        crate,
        device,
        pixels=config.eval.pixel_baseline,
    )
    t_eval += time.perf_counter() - t1
    extras["diag"], extras["spectrum"] = diag, spectrum
    seconds = {"train": t_train, "eval": t_eval}
    result = ArmResult(name, config, metrics, random_metrics, fit_result.history, seconds, n_params)
    say(
        f"[{name}] linacc {100 * metrics['linacc']:.1f} %, R² {metrics['r2']:.3f}"
        + (
            f", rotation Δz top-2 {100 * metrics['rot_delta_top2']:.1f} %"
            if "rot_delta_top2" in metrics
            else ""
        )
        + f" (train {t_train:.0f} s, eval {t_eval:.0f} s)"
    )
    return result, extras


def _action_names(views_kind: str, a: int) -> list[str]:
    if views_kind == "affine" and a == 5:
        return ["sin Δθ", "cos Δθ", "Δtx", "Δty", "Δlog s"]
    if views_kind in ("rotation", "rotation90") and a == 2:
        return ["sin Δθ", "cos Δθ"]
    return [f"a[{j}]" for j in range(a)]


def _write_plots(
    out_dir: Path,
    arms: Mapping[str, ArmResult],
    extras: Mapping[str, Mapping[str, Any]],
    views_kind: str,
) -> list[str]:
    from jepa_blocks.metrics import plot_spectrum

    written: list[str] = []
    titles = {"agg": "aggregator", "pred": "predictor"}
    for what, field, ylabel, title in (
        ("rates", "rates", "R^c of the MSSA input tokens", "Compression R^c by layer"),
        ("sparsity", "sparsity", "ISTA sparsity (fraction of zeros)", "ISTA sparsity by layer"),
    ):
        profiles: dict[str, list[float]] = {}
        for name, ex in extras.items():
            for key, d in ex["diag"].items():
                profiles[f"{name} {titles[key]}"] = getattr(d, field).tolist()
                d0 = ex.get("init_diag", {}).get(key)
                if d0 is not None:
                    profiles[f"{name} {titles[key]} init"] = getattr(d0, field).tolist()
        if profiles:
            fname = f"crate_layer_{what}.png"
            plot_layer_profiles(
                profiles,
                ylabel=ylabel,
                path=out_dir / fname,
                title=f"{title} (test sequences)",
            )
            written.append(fname)
    for name, ex in extras.items():
        for key, d in ex["diag"].items():
            fname = f"head_specialization_{name}_{key}.png"
            plot_head_specialization(
                d.head_r2[-1],
                action_names=_action_names(views_kind, d.head_r2.shape[-1]),
                path=out_dir / fname,
                title=f"{name}: last {titles[key]} layer, held-out R² of {d.action} per head",
            )
            written.append(fname)
        if ex["diag"]:
            fname = f"crate_history_{name}.png"
            if plot_monitor_history(
                arms[name].history,
                path=out_dir / fname,
                title=f"{name}: CRATE diagnostics during training",
            ):
                written.append(fname)
    spectra = {n: ex["spectrum"] for n, ex in extras.items() if ex.get("spectrum") is not None}
    if spectra:
        plot_spectrum(
            spectra,
            top_k=2,
            path=out_dir / "rotation_delta_spectrum.png",
            title="Covariance spectrum of Δz on pure-rotation pairs",
        )
        written.append("rotation_delta_spectrum.png")
    return written


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, Tensor):
        return o.tolist()
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def run_step3(
    configs: Mapping[str, ExperimentConfig],
    crate: CRATEConfig,
    *,
    out_dir: PathLike | None = None,
    verbose: bool = True,
) -> Step3Result:
    """Train and measure every arm on the same data; write the report and plots to ``out_dir``.

    The data (images, view generator) are built once from the first arm's ``data`` config, which
    every arm must share; each arm uses its own ``train.seed`` (equal by default), so the arms
    see the same data order, augmentations and probe sequences. ``out_dir/<arm>/`` receives the
    loop's metrics log, CSV and checkpoint; ``out_dir`` receives ``step3.json``, ``table.md``
    and the plots.

    Args:
        configs: ``{arm: experiment config}``, arms from :data:`ARMS`.
        crate: The CRATE settings.
        out_dir: Output directory (``None``: write nothing).
        verbose: Print progress and the table.

    Returns:
        :class:`Step3Result`.
    """
    if not configs:
        raise ValueError("configs must hold at least one arm")
    for name, cfg in configs.items():
        if name not in ARMS:
            raise ValueError(f"unknown arm {name!r}; choose from {sorted(ARMS)}")
        if not isinstance(cfg, ExperimentConfig):
            raise TypeError(f"configs[{name!r}] must be an ExperimentConfig")
        if cfg.variant not in VARIANTS:
            raise ValueError(f"configs[{name!r}].variant {cfg.variant!r} is not a known variant")
    if not isinstance(crate, CRATEConfig):
        raise TypeError(f"crate must be a CRATEConfig, got {type(crate).__name__}")
    check_positive(crate.diag_eps, "crate.diag_eps")
    check_int(crate.diag_samples, "crate.diag_samples")
    first = next(iter(configs.values()))
    for name, cfg in configs.items():
        if cfg.data != first.data:
            raise ValueError(f"every arm must use the same data config; {name!r} differs")
    say = print if verbose else (lambda *a, **k: None)
    t0 = time.perf_counter()
    if first.threads is not None:
        check_int(first.threads, "threads")
        torch.set_num_threads(first.threads)
    out = Path(out_dir) if out_dir is not None else None
    data = build_data(first.data)
    say(
        f"step 3 on {first.data.dataset} ({len(data.train)}/{len(data.test)} images, "
        f"{first.data.views} views, M={first.data.num_observed}); arms: {', '.join(configs)}"
    )
    arms: dict[str, ArmResult] = {}
    extras: dict[str, dict[str, Any]] = {}
    for name, cfg in configs.items():
        arms[name], extras[name] = _run_arm(name, cfg, crate, data, out, say)
    table = format_side_by_side({n: table_rows(a) for n, a in arms.items()})
    plots: list[str] = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if first.eval.plots:
            plots = _write_plots(out, arms, extras, first.data.views)
        (out / "table.md").write_text(table + "\n", encoding="utf-8")
        report = {
            "preset": first.name,
            "date": _dt.date.today().isoformat(),
            "device": str(resolve_device(first.train.device)),
            "versions": {"torch": torch.__version__, "python": platform.python_version()},
            "crate": config_to_dict(crate),
            "arms": {
                n: {
                    "step": a.config.step,
                    "variant": a.config.variant,
                    "integration": ARMS[n].integration,
                    "metrics": a.metrics,
                    "random_init": a.random_init,
                    "parameters": a.parameters,
                    "seconds": a.seconds,
                    "config": config_to_dict(a.config),
                }
                for n, a in arms.items()
            },
            "table": table,
            "plots": plots,
            "seconds": time.perf_counter() - t0,
        }
        tmp = out / "step3.json.tmp"
        tmp.write_text(json.dumps(report, indent=2, default=_json_default) + "\n", encoding="utf-8")
        os.replace(tmp, out / "step3.json")
    seconds = time.perf_counter() - t0
    say("")
    say(table)
    say(f"\ntotal {seconds:.0f} s" + (f"; results in {out}" if out is not None else ""))
    return Step3Result(arms, table, out, plots, seconds)


# --------------------------------------------------------------------------- command line


def main(
    argv: Sequence[str] | None = None,
    *,
    config_dir: PathLike,
    description: str = "",
) -> int:
    """Command line of ``examples/step3_crate.py``.

    ``--preset NAME`` (a shared preset, default ``cpu-demo``), ``--smoke`` (the preset's smoke
    overrides plus :data:`SMOKE_OVERRIDES`), ``--out DIR``, ``--config FILE`` (merged on top of
    the preset), ``--arms`` (comma-separated keys of :data:`ARMS`), ``--variant`` (the step-2
    variant, also the base of step 3), and ``key=value`` overrides: ``crate.<key>=`` for
    :class:`CRATEConfig`, anything else for every arm's experiment config.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).
        config_dir: Directory of the preset YAML files.
        description: Help text.

    Returns:
        The exit status (0).
    """
    presets = sorted(p.stem for p in Path(config_dir).glob("*.yaml"))
    parser = argparse.ArgumentParser(
        description=description or None, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="cpu-demo", help=f"one of {presets}")
    parser.add_argument("--smoke", action="store_true", help="a complete run in seconds (CI)")
    parser.add_argument(
        "--out", default=None, help="output directory (default runs/step3-<preset>)"
    )
    parser.add_argument("--config", default=None, help="YAML file merged on top of the preset")
    parser.add_argument(
        "--arms", default=",".join(DEFAULT_ARMS), help=f"comma-separated, from {list(ARMS)}"
    )
    parser.add_argument(
        "--variant",
        default="stopgrad-rate",
        choices=[v for v in VARIANTS if v != "baseline"],
        help="target/regularizer of step 2, also used by the step-3 arms",
    )
    parser.add_argument(
        "overrides", nargs="*", help="key=value, e.g. train.epochs=3 crate.layer=crate-alpha"
    )
    args = parser.parse_intermixed_args(argv)
    names = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in names if a not in ARMS]
    if unknown or not names:
        parser.error(f"unknown arm(s) {unknown}; choose from {list(ARMS)}")
    crate_over = [o.removeprefix("crate.") for o in args.overrides if o.startswith("crate.")]
    exp_over = [o for o in args.overrides if not o.startswith("crate.")]
    try:
        crate = apply_overrides(config_from_dict(CRATEConfig, {}), crate_over)
        configs = {
            n: _arm_config(
                n,
                preset=args.preset,
                config_dir=config_dir,
                config_file=args.config,
                variant=args.variant,
                smoke=args.smoke,
                overrides=exp_over,
            )
            for n in names
        }
    except (ValueError, TypeError) as e:
        parser.error(str(e))
    out = args.out or os.path.join(
        "runs", f"step3-{args.preset}" + ("-smoke" if args.smoke else "")
    )
    run_step3(configs, crate, out_dir=out)
    sys.stdout.flush()
    return 0
