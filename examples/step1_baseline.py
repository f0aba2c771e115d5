"""Step 1: seq-JEPA with its EMA teacher (Ghaemi et al., 2025, arXiv:2505.03176).

Builds the data (labelled images → sequences of transformed views with their relative actions),
the model (encoder, EMA target, action encoder, [AGG] aggregator, predictor), trains it with
jepa_blocks.train.fit, then probes the trained network next to the same network at
initialisation: class accuracy from z_agg (invariance), R² of the action from [z_1; z_2]
(equivariance), the leakage probes and effective ranks. Writes metrics.json, table.md and plots
into --out. With the step-2 regularizer model.regularizer=subspace, whose subspace projection
splits z into an invariant and an equivariant part, the parts are probed too (the inv_* / eq_*
keys, see subspace_metrics).

examples:
    python examples/step1_baseline.py                      # cpu-demo: MNIST-5k, ~3 min on 2 cores
    python examples/step1_baseline.py --smoke              # a complete run in seconds
    python examples/step1_baseline.py train.epochs=4 model.ema_base=0.996
    python examples/step1_baseline.py --print-config       # the resolved config, as YAML

outputs (in --out, default runs/step1-baseline-<preset>):
    metrics.json   final metrics, random-init metrics, gate verdict, resolved config, versions
    table.md       the printed table
    *.png          rank monitor, z_agg spectrum, rotation circle
    checkpoint.pt  the last checkpoint (a rerun resumes from it; train.resume=false to restart)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from common import (
    RecipeConfig,
    cell,
    check_gate,
    format_probe_table,
    gate_line,
    gate_metrics,
    markdown_table,
    parse_cli,
    probe_plots,
    write_outputs,
)
from jepa_blocks import SubspaceProjection
from jepa_blocks.metrics import (
    EvalConfig,
    FeatureSet,
    effective_rank,
    evaluate,
    extract_features,
    rank_monitor,
    subspace_diagnostics,
    subspace_leakage,
)
from jepa_blocks.metrics.evaluation import classifier_kwargs
from jepa_blocks.runtime import num_threads
from jepa_blocks.train import fit, seed_everything
from jepa_blocks.train.config import config_to_dict
from jepa_blocks.train.loop import resolve_device, schedule_steps
from parts import build_data, build_model, make_loader, subset

__all__ = ["SUBSPACE_KEYS", "main", "paired_projection", "run", "subspace_metrics"]

#: The keys subspace_metrics adds to metrics.json (every run with a subspace split, the same).
SUBSPACE_KEYS = (
    "inv_linacc",
    "eq_linacc",
    "inv_r2",
    "eq_r2",
    "inv_eq_linacc_gap",
    "eq_inv_r2_gap",
    "rank_inv",
    "rank_eq",
    "dim_inv",
    "dim_eq",
    "explained_variance_inv",
    "explained_variance_eq",
)
_SUBSPACE_ROWS = (
    ("inv_linacc", "linacc(z_1 invariant part)", "pct"),
    ("eq_linacc", "linacc(z_1 equivariant part)", "pct"),
    ("inv_r2", "R² of a_1 from [z_1; z_2] invariant part", "num"),
    ("eq_r2", "R² of a_1 from [z_1; z_2] equivariant part", "num"),
    ("inv_eq_linacc_gap", "linacc gap (inv − eq)", "pct"),
    ("eq_inv_r2_gap", "R² gap (eq − inv)", "num"),
    ("rank_inv", "effective rank, invariant part", "num"),
    ("rank_eq", "effective rank, equivariant part", "num"),
    ("explained_variance_inv", "variance of z_1 in the invariant part", "pct"),
    ("explained_variance_eq", "variance of z_1 in the equivariant part", "pct"),
)


def paired_projection(projection: SubspaceProjection) -> SubspaceProjection:
    """The same parts of ``[z_1; z_2]``: ``U`` block-diagonal twice, for the relative action.

    ``a_1`` maps view 1 to view 2, so it is probed from both views' coordinates, as the main
    ``r2`` is from ``[z_1; z_2]``: part ``name`` of ``[z_1; z_2]`` is
    ``[part(z_1, name); part(z_2, name)]``.
    """
    d, p = projection.dim, projection.subspace_dim
    pair = SubspaceProjection(
        2 * d,
        subspace_dim=p,
        parts={name: 2 * k for name, k in projection.parts.items()},
        orthogonality="penalty",
    )
    w = projection.weight.detach()
    blocks = []
    for name in projection.parts:
        s = projection.subspaces(name)
        w_part = w[:, s.start * p : s.stop * p]
        blocks.append(torch.block_diag(w_part, w_part))
    with torch.no_grad():
        pair.weight.copy_(torch.cat(blocks, dim=1))
    return pair


def subspace_metrics(
    projection: SubspaceProjection, train: FeatureSet, test: FeatureSet, config: EvalConfig
) -> dict[str, float]:
    """Probes of the invariant and equivariant parts of ``z`` (test scores).

    ``inv_linacc`` / ``eq_linacc``: class accuracy from the part's coordinates of ``z_1`` (the
    leakage of the class into the equivariant part); ``inv_r2`` / ``eq_r2``: R² of ``a_1`` from
    the part's coordinates of ``[z_1; z_2]`` with the main ``r2``'s regressor (the leakage of the
    action into the invariant part); both by :func:`jepa_blocks.metrics.subspace_leakage`. Their
    gaps, the effective ranks and dimensions of the parts' ``z_1`` coordinates and the fraction
    of ``z_1``'s variance in each part (:func:`jepa_blocks.metrics.subspace_diagnostics`).
    """
    projection = projection.cpu()
    reg_kw: dict[str, Any] = {"kind": config.regressor}
    if config.regressor == "mlp":
        reg_kw |= {
            k: getattr(config, f"regressor_{k}") for k in ("hidden", "depth", "epochs", "lr")
        }
        reg_kw.update(seed=config.seed, generator=torch.Generator().manual_seed(config.seed))

    def split(f: FeatureSet, pair: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = torch.cat((f.z[:, 0], f.z[:, 1]), dim=1) if pair else f.z[:, 0]
        return z, f.labels, f.actions[:, 0]

    with num_threads(config.probe_threads), torch.no_grad():
        single = subspace_leakage(
            projection, split(train, False), split(test, False),
            classifier_kwargs=classifier_kwargs(config), regressor_kwargs={"kind": "linear"},
        )  # fmt: skip
        pair = subspace_leakage(
            paired_projection(projection), split(train, True), split(test, True),
            classifier_kwargs=classifier_kwargs(config), regressor_kwargs=reg_kw,
        )  # fmt: skip
        z1 = test.z[:, 0]
        diag = subspace_diagnostics(projection, z1)
        out: dict[str, float] = {}
        for short, name in (("inv", "invariant"), ("eq", "equivariant")):
            out[f"{short}_linacc"] = single[f"{name}/class_accuracy"]
            out[f"{short}_r2"] = pair[f"{name}/action_r2"]
            out[f"rank_{short}"] = effective_rank(projection.part(z1, name))
            out[f"dim_{short}"] = projection.parts[name] * projection.subspace_dim
            out[f"explained_variance_{short}"] = diag[f"{name}/explained_variance"]
    out["inv_eq_linacc_gap"] = out["inv_linacc"] - out["eq_linacc"]
    out["eq_inv_r2_gap"] = out["eq_r2"] - out["inv_r2"]
    return {k: out[k] for k in SUBSPACE_KEYS}


def subspace_table(trained: Mapping[str, Any], random_init: Mapping[str, Any] | None) -> str:
    """The rows of :func:`subspace_metrics`, trained next to random-init."""
    rows = [
        (label, cell(trained, key, kind), cell(random_init, key, kind))
        for key, label, kind in _SUBSPACE_ROWS
    ]
    return markdown_table(("subspace split of z", "trained", "random-init"), rows)


def _projection(model: Any) -> SubspaceProjection | None:
    """The model's subspace split of ``z``: its regularizer's ``projection``, if any."""
    proj = getattr(getattr(model, "regularizer", None), "projection", None)
    return proj if isinstance(proj, SubspaceProjection) else None


def run(config: RecipeConfig, *, verbose: bool = True) -> dict[str, Any]:
    """Train and probe one seq-JEPA model; write the outputs; return the metrics.json record."""
    with num_threads(config.threads):
        return _run(config, say=print if verbose else (lambda *a, **k: None))


def _run(config: RecipeConfig, *, say: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    device = resolve_device(config.train.device)
    out_dir = Path(config.train.out_dir) if config.train.out_dir is not None else None

    # Data: images → sequences of M+1 transformed views and M relative actions, on the device.
    data = build_data(config.data)
    seed_everything(config.train.seed)
    loader = make_loader(
        data.train, data.views, num_observed=config.data.num_observed,
        batch_size=config.data.batch_size, seed=config.train.seed, device=device,
        shuffle=True, drop_last=len(data.train) > config.data.batch_size,
    )  # fmt: skip
    total_steps, _ = schedule_steps(loader, config.train)

    # Model: encoder, target (EMA or stop-gradient), action encoder, aggregator, predictor and
    # the optional regularizer, assembled by parts.build_model from the config's names.
    model = build_model(
        config.model,
        in_channels=int(data.train.images.shape[1]),
        action_dim=int(data.views.action_dim),
        total_steps=max(1, total_steps),
        steps_per_epoch=len(loader),
        num_observed=config.data.num_observed,
    ).to(device)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    m = config.model
    say(
        f"[{config.step}/{config.variant}] preset {config.name}: {config.data.dataset} "
        f"{len(data.train)}/{len(data.test)} images, {config.data.views} views, "
        f"M={config.data.num_observed}, {m.encoder} D={m.encoder_dim}, target={m.target}, "
        f"regularizer={m.regularizer}"
        + (f" λ={model.regularizer_weight}" if m.regularizer != "none" else "")
        + f", {n_params / 1e6:.2f} M parameters, {total_steps} steps on {device}"
    )

    # Evaluation sequences: one fixed sequence per image (own seeds), M_val observed views.
    m_val = config.eval.num_observed or config.data.num_observed

    def eval_loader(source: Any, seed: int) -> Any:
        return make_loader(
            source, data.views, num_observed=m_val, batch_size=config.eval.batch_size,
            seed=seed, device=device, shuffle=False, drop_last=False,
        )  # fmt: skip

    probe_train = eval_loader(data.train, config.eval.seed)
    probe_test = eval_loader(data.test, config.eval.seed + 1)
    passes = config.eval.train_sequences_per_image
    monitor = rank_monitor(
        next(iter(eval_loader(subset(data.test, config.eval.monitor_size, 2), 7)))
    )

    # The same network at initialisation: the baseline every trained number is compared with.
    random_metrics: dict[str, Any] | None = None
    random_feats: FeatureSet | None = None
    init_ranks: dict[str, float] | None = None
    t_eval = 0.0
    if config.eval.baseline:
        t1 = time.perf_counter()
        say("evaluating the random-init network ...")
        random_feats = extract_features(model, probe_test)
        random_train = extract_features(model, probe_train, passes=passes)
        random_metrics = evaluate(random_train, random_feats, config.eval)
        if (proj := _projection(model)) is not None:
            random_metrics |= subspace_metrics(proj, random_train, random_feats, config.eval)
        model.eval()
        with torch.no_grad():
            init_ranks = monitor(model, 0)
        model.train()
        t_eval += time.perf_counter() - t1

    # Train: the library's one loop (schedule, AMP, checkpoints, exact resume, NaN guard).
    t1 = time.perf_counter()
    result = fit(model, loader, config.train, eval_fn=monitor, full_config=config_to_dict(config))
    t_train = time.perf_counter() - t1

    # Probe the trained network.
    t1 = time.perf_counter()
    say("evaluating the trained network ...")
    model = result.model
    pixels = config.eval.pixel_baseline
    test_feats = extract_features(model, probe_test, pixels=pixels)
    train_feats = extract_features(model, probe_train, passes=passes, pixels=pixels)
    metrics = evaluate(train_feats, test_feats, config.eval)
    if (proj := _projection(model)) is not None:
        metrics |= subspace_metrics(proj, train_feats, test_feats, config.eval)
    t_eval += time.perf_counter() - t1

    # Report: table, gate, metrics.json, plots.
    flat = gate_metrics(metrics, random_metrics)
    gate = check_gate(config, flat)
    table = format_probe_table(metrics, random_metrics)
    if _projection(model) is not None:
        table += "\n\n" + subspace_table(metrics, random_metrics)
    last: dict[str, Any] = next((r for r in reversed(result.history) if "loss" in r), {})
    plots: list[str] = []
    if out_dir is not None and config.eval.plots:
        out_dir.mkdir(parents=True, exist_ok=True)
        plots = probe_plots(
            out_dir, result.history, test_feats, random_feats, init_ranks, config.data.views
        )
    seconds = {"train": t_train, "eval": t_eval, "total": time.perf_counter() - t0}
    record = {
        "metrics": metrics,
        "random_init": random_metrics,
        "gains": {k: flat[k] for k in ("linacc_gain", "r2_gain") if k in flat},
        "train": {
            "steps": result.step,
            "epochs": result.epoch,
            "final_loss": last.get("loss", float("nan")),
            "final_prediction_loss": last.get("prediction_loss", float("nan")),
            "parameters": n_params,
        },
    }
    write_outputs(
        out_dir, config=config, device=device, table=table, gate=gate, seconds=seconds,
        plots=plots, **record,
    )  # fmt: skip
    say("")
    say(table)
    if gate is not None:
        say("")
        say(gate_line(gate))
    say(
        f"\ntrain {t_train:.0f} s, eval {t_eval:.0f} s, total {seconds['total']:.0f} s"
        + (f"; results in {out_dir}" if out_dir is not None else "")
    )
    return {**record, "gate": gate, "table": table, "seconds": seconds, "fit": result}


def main(argv: Sequence[str] | None = None) -> int:
    config, _ = parse_cli(
        RecipeConfig, argv, step="step1", description=__doc__, default_variant="baseline"
    )
    run(config)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
