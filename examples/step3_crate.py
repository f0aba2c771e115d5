"""Step 3: CRATE inside seq-JEPA, next to steps 1 and 2 on the same data.

CRATE (Yu et al., NeurIPS 2023, "White-Box Transformers via Sparse Rate Reduction") replaces
either the aggregator's transformer stack (integration A, arm step3-agg) or the MLP predictor
(integration B, arm step3-pred: a two-token CRATE predictor) of the step-2 model. Every arm is
trained with jepa_blocks.train.fit on the same images, view sequences, data order and seed (so
the same encoder initialisation), then probed as in steps 1 and 2; the script prints one column
per arm: linacc, R², leakage gaps, effective ranks, the rotation Δz spectrum (variance fraction
in the top 2 components), and for the CRATE parts ISTA sparsity, per-layer coding rate R^c and
head specialisation. During training the loop logs the CRATE diagnostics of a fixed test batch.

arms (configs/step3/arms/<arm>.yaml; which ones run: the config's `arms`, default
configs/steps/step3.yaml):
    step1        seq-JEPA with its EMA teacher (variant baseline)
    step2        the --variant (default stopgrad-rate: stop-gradient target + coding rate)
    step3-agg    step 2 with a CRATE aggregator (A)
    step3-pred   step 2 with a CRATE predictor (B)
    step3-both   A and B together (not run by default)

crate.<key>=value sets the CRATE parts and diagnostics (step3_parts.CRATEConfig: layer type,
depths, heads, η, λ, paper or code MSSA form); every other key=value applies to every arm.

examples:
    python examples/step3_crate.py                       # cpu-demo: 4 arms, ~10 min on 2 cores
    python examples/step3_crate.py --smoke               # a complete run in seconds (CI)
    python examples/step3_crate.py --preset paper-cifar100   # the paper's configuration (GPU)
    python examples/step3_crate.py --arms step2,step3-both crate.layer=crate-alpha
    python examples/step3_crate.py 'arms=[step2,step3-agg]' train.epochs=4
    python examples/step3_crate.py --print-config        # the resolved config, as YAML

outputs (in --out, default runs/step3-<variant>-<preset>):
    metrics.json   `metrics` / `random_init`: the headline arm (the first step-3 arm run,
                   step3-agg by default, else the last arm; named in `headline`), the preset's
                   gate checked on it; `arms`: every arm's metrics, random-init metrics,
                   parameters, times and config; the resolved config, versions
    table.md       the printed table
    *.png          R^c and sparsity by layer, head specialisation, CRATE diagnostics during
                   training, rotation Δz spectra
    <arm>/         each arm's loop log, metrics.csv and checkpoint (a rerun resumes from it)
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from common import check_gate, gate_line, gate_metrics, parse_cli, write_outputs
from jepa_blocks.blocks import StackDiagnostics, crate_monitor, crate_stack_diagnostics
from jepa_blocks.metrics import evaluate, extract_features, rotation_delta_spectrum
from jepa_blocks.runtime import num_threads
from jepa_blocks.train import fit, seed_everything
from jepa_blocks.train.config import config_to_dict
from jepa_blocks.train.loop import resolve_device, schedule_steps
from parts import RecipeData, build_data, make_loader, subset
from step2_teacherless import VARIANTS
from step3_parts import (
    Arm,
    Step3Config,
    arm_config,
    build_arm_model,
    crate_metrics,
    format_side_by_side,
    load_arm,
    rotation_metrics,
    table_rows,
    write_plots,
)

__all__ = ["ArmResult", "main", "run", "run_arm"]


@dataclasses.dataclass
class ArmResult:
    """One arm of the run: what metrics.json records, plus what the plots need."""

    name: str
    arm: Arm
    config: Step3Config
    metrics: dict[str, Any]
    random_init: dict[str, Any] | None
    parameters: int
    seconds: dict[str, float]
    history: list[dict[str, Any]]
    diag: dict[str, StackDiagnostics]
    init_diag: dict[str, StackDiagnostics]
    spectrum: Tensor | None

    def record(self) -> dict[str, Any]:
        """The arm's entry under ``arms`` in metrics.json."""
        return {
            "step": self.config.step,
            "variant": self.config.variant,
            "integration": self.arm.integration,
            "metrics": self.metrics,
            "random_init": self.random_init,
            "parameters": self.parameters,
            "seconds": self.seconds,
            "config": config_to_dict(self.config),
        }


def run(config: Step3Config, *, verbose: bool = True) -> dict[str, Any]:
    """Train and measure every arm of ``config.arms``; write the outputs; return the record."""
    if not config.arms:
        raise ValueError("config.arms must name at least one arm")
    with num_threads(config.threads):
        return _run(config, say=print if verbose else (lambda *a, **k: None))


def _run(config: Step3Config, *, say: Callable[..., None]) -> dict[str, Any]:
    t0 = time.perf_counter()
    device = resolve_device(config.train.device)
    out_dir = Path(config.train.out_dir) if config.train.out_dir is not None else None

    # Data, once for every arm: images → sequences of M+1 transformed views and M actions.
    data = build_data(config.data)
    say(
        f"step 3 on {config.data.dataset} ({len(data.train)}/{len(data.test)} images, "
        f"{config.data.views} views, M={config.data.num_observed}); arms: {', '.join(config.arms)}"
    )

    # Every arm: the step-1/2 recipe with its own model, CRATE diagnostics on top.
    results = {name: run_arm(name, config, data, out_dir=out_dir, say=say) for name in config.arms}

    # Report: the side-by-side table, the headline arm's gate, metrics.json, plots.
    headline = next((n for n, r in results.items() if r.config.step == "step3"), config.arms[-1])
    head = results[headline]
    table = format_side_by_side(
        {n: table_rows(r.metrics, r.random_init) for n, r in results.items()}
    )
    gate = check_gate(config, gate_metrics(head.metrics, head.random_init))
    plots: list[str] = []
    if out_dir is not None and config.eval.plots:
        out_dir.mkdir(parents=True, exist_ok=True)
        plots = write_plots(
            out_dir,
            diags={n: r.diag for n, r in results.items()},
            init_diags={n: r.init_diag for n, r in results.items()},
            histories={n: r.history for n, r in results.items()},
            spectra={n: r.spectrum for n, r in results.items() if r.spectrum is not None},
            views_kind=config.data.views,
        )
    seconds = {"total": time.perf_counter() - t0}
    record: dict[str, Any] = {
        "metrics": head.metrics,
        "random_init": head.random_init,
        "headline": headline,
        "arms": {n: r.record() for n, r in results.items()},
    }
    write_outputs(
        out_dir, config=config, device=device, table=table, gate=gate, seconds=seconds,
        plots=plots, **record,
    )  # fmt: skip
    say("")
    say(table)
    if gate is not None:
        say("")
        say(f"headline arm {headline}: " + gate_line(gate))
    say(
        f"\ntotal {seconds['total']:.0f} s"
        + (f"; results in {out_dir}" if out_dir is not None else "")
    )
    return {
        **record,
        "gate": gate,
        "table": table,
        "plots": plots,
        "seconds": seconds,
        "results": results,
    }


def run_arm(
    name: str,
    run_config: Step3Config,
    data: RecipeData,
    *,
    out_dir: Path | None,
    say: Callable[..., None],
) -> ArmResult:
    """Train and measure one arm (``out_dir/<name>/`` receives the loop's log and checkpoint)."""
    arm = load_arm(name)
    config = arm_config(run_config, arm)
    crate = config.crate
    device = resolve_device(config.train.device)
    seed_everything(config.train.seed)
    loader = make_loader(
        data.train, data.views, num_observed=config.data.num_observed,
        batch_size=config.data.batch_size, seed=config.train.seed, device=device,
        shuffle=True, drop_last=len(data.train) > config.data.batch_size,
    )  # fmt: skip
    total_steps, _ = schedule_steps(loader, config.train)

    # Model: parts.build_model (as steps 1 and 2, same encoder initialisation), CRATE parts in.
    model = build_arm_model(
        config.model,
        crate,
        integration=arm.integration,
        in_channels=int(data.train.images.shape[1]),
        action_dim=int(data.views.action_dim),
        total_steps=max(1, total_steps),
        steps_per_epoch=len(loader),
    ).to(device)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    say(
        f"[{name}] {config.step}/{config.variant}, CRATE parts: {arm.integration}, "
        f"{n_params / 1e6:.2f} M parameters, {total_steps} steps on {device}"
    )

    # Evaluation sequences (one fixed sequence per image) and the monitored test batch.
    m_val = config.eval.num_observed or config.data.num_observed

    def eval_loader(source: Any, seed: int, batch_size: int) -> Any:
        return make_loader(
            source, data.views, num_observed=m_val, batch_size=batch_size, seed=seed,
            device=device, shuffle=False, drop_last=False,
        )  # fmt: skip

    probe_train = eval_loader(data.train, config.eval.seed, config.eval.batch_size)
    probe_test = eval_loader(data.test, config.eval.seed + 1, config.eval.batch_size)
    monitor_src = subset(data.test, config.eval.monitor_size, 2)
    monitor_batch = next(iter(eval_loader(monitor_src, 7, len(monitor_src))))
    monitor = crate_monitor(monitor_batch, eps=crate.diag_eps)

    # The same network at initialisation (or only its CRATE diagnostics, for the plots).
    random_metrics: dict[str, Any] | None = None
    t1 = time.perf_counter()
    if config.eval.baseline:
        random_metrics, init_diag, _ = _measure(model, probe_train, probe_test, data, config)
    else:
        probe_test.set_epoch(0)
        init_diag = crate_stack_diagnostics(
            model, probe_test, eps=crate.diag_eps, max_samples=crate.diag_samples
        )
    t_eval = time.perf_counter() - t1

    # Train: the library's one loop, the CRATE monitor as its eval_fn.
    arm_dir = out_dir / name if out_dir is not None else None
    train_cfg = dataclasses.replace(config.train, out_dir=str(arm_dir) if arm_dir else None)
    t1 = time.perf_counter()
    fit_result = fit(model, loader, train_cfg, eval_fn=monitor, full_config=config_to_dict(config))
    t_train = time.perf_counter() - t1

    # Probe and diagnose the trained network.
    t1 = time.perf_counter()
    metrics, diag, spectrum = _measure(
        fit_result.model, probe_train, probe_test, data, config, pixels=config.eval.pixel_baseline
    )
    t_eval += time.perf_counter() - t1
    say(
        f"[{name}] linacc {100 * metrics['linacc']:.1f} %, R² {metrics['r2']:.3f}"
        + (
            f", rotation Δz top-2 {100 * metrics['rot_delta_top2']:.1f} %"
            if "rot_delta_top2" in metrics
            else ""
        )
        + f" (train {t_train:.0f} s, eval {t_eval:.0f} s)"
    )
    return ArmResult(
        name=name, arm=arm, config=config, metrics=metrics, random_init=random_metrics,
        parameters=n_params, seconds={"train": t_train, "eval": t_eval},
        history=fit_result.history, diag=diag, init_diag=init_diag, spectrum=spectrum,
    )  # fmt: skip


def _measure(
    model: nn.Module,
    probe_train: Any,
    probe_test: Any,
    data: RecipeData,
    config: Step3Config,
    *,
    pixels: bool = False,
) -> tuple[dict[str, Any], dict[str, StackDiagnostics], Tensor | None]:
    """The probes of steps 1 and 2, the CRATE diagnostics and the rotation Δz spectrum."""
    crate = config.crate
    test_feats = extract_features(model, probe_test, pixels=pixels)
    train_feats = extract_features(
        model, probe_train, passes=config.eval.train_sequences_per_image, pixels=pixels
    )
    metrics = evaluate(train_feats, test_feats, config.eval)
    probe_test.set_epoch(0)
    diag = crate_stack_diagnostics(
        model, probe_test, eps=crate.diag_eps, max_samples=crate.diag_samples
    )
    metrics.update(crate_metrics(diag))
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
            device=resolve_device(config.train.device),
        )
        metrics.update(rotation_metrics(spectrum))
        metrics["rot_delta_spectrum"] = spectrum.tolist()
    return metrics, diag, spectrum


def main(argv: Sequence[str] | None = None) -> int:
    def add_arguments(parser: Any) -> None:
        parser.add_argument(
            "--arms",
            default=None,
            help="comma-separated arms, e.g. step2,step3-both (= arms=[...])",
        )

    def arms_override(args: Any) -> list[str]:
        return [f"arms=[{args.arms}]"] if args.arms else []

    config, _ = parse_cli(
        Step3Config,
        argv,
        step="step3",
        description=__doc__,
        variants=VARIANTS,
        default_variant="stopgrad-rate",
        add_arguments=add_arguments,
        extra_overrides=arms_override,
    )
    run(config)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
