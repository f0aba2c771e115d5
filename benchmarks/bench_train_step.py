"""Benchmark of one seq-JEPA training step at the paper's CIFAR-100 configuration.

Compares, in one run and on one device:

* ``ours`` — the shared loop :func:`jepa_blocks.train.loop.fit` on a
  :class:`jepa_blocks.data.SequenceLoader`: the paper's crop | jitter | blur views (9-d action)
  generated on the device, :meth:`jepa_blocks.SeqJEPA.from_encoder` around the CIFAR ResNet-18
  with an :class:`jepa_blocks.EMATarget` (foreach EMA), AdamW (paper recipe), bf16 autocast and
  channels_last on CUDA (``--compile`` adds ``torch.compile``). The step time is the time between
  consecutive ``batch_fn`` calls, so it includes the augmentation, the optimizer, the EMA update
  and the loop's own bookkeeping.
* ``official`` — a re-implementation, written from the reference notes (not copied), of the
  official training step of ``hafezgh/seq-jepa`` (``main_transformed_views.py``,
  ``SeqJEPA_Transforms``): fp32, ResNet-18 (CIFAR stem, ``zero_init_residual``), action projector
  ``Linear(9, 128, bias=False)`` + ``BatchNorm1d(affine=False)``, three post-norm
  ``nn.TransformerEncoderLayer(640, 4, 2560)`` + ``LayerNorm``, predictor 768 → 1024 → 512,
  the attached online probes (``Linear(640, 100)`` on ``z_AGG`` and an MLP 1024 → 1024 → 1024 → 9
  on ``[z_1; z_2]``) trained by the same optimizer, ``Adam(lr=1e-3)``, and the EMA as a Python
  loop over parameters after every step. Its views are pre-made on the device: the official code
  augments on CPU workers with PIL, which is *not* timed here (in favour of ``official``).
* ``official_bf16_cl`` (CUDA only) — the same with bf16 autocast and channels_last.

Paper configuration: batch 512, ``M_tr = 3`` (4 views per sequence), 32×32 images. On CPU the
batch is reduced (``--batch``, default 16) and the ratio is what to read; the implementations
alternate over ``--rounds`` so that both see the same background load. Usage::

    python benchmarks/bench_train_step.py                       # device auto, table on stdout
    python benchmarks/bench_train_step.py --json out.json       # also write the results
    python benchmarks/bench_train_step.py --markdown out.md     # and a Markdown table
    python benchmarks/bench_train_step.py --threads 1           # per-thread CPU numbers
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import itertools
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import jepa_blocks
from jepa_blocks import EMATarget, SeqJEPA, resnet18_encoder
from jepa_blocks.data import (
    CIFAR100_STATS,
    LabelledImages,
    SequenceLoader,
    cifar_augmentation_views,
)
from jepa_blocks.train.config import TrainConfig
from jepa_blocks.train.loop import fit, resolve_device, seed_everything

NUM_CLASSES = 100
ACTION_DIM = 9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _synthetic_cifar(n: int, seed: int = 0) -> LabelledImages:
    """Random uint8 32×32 RGB images with CIFAR-100 labels and statistics (no download)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    classes = tuple(str(i) for i in range(NUM_CLASSES))
    return LabelledImages(images, labels, classes, *CIFAR100_STATS, name="synthetic-cifar")


# --------------------------------------------------------------------------- ours


def time_ours(
    device: torch.device, *, batch: int, steps: int, warmup: int, compile_model: bool
) -> dict[str, Any]:
    """Median step time (ms) of the shared loop at the paper configuration."""
    seed_everything(0)
    source = _synthetic_cifar(batch * (steps + warmup + 1))
    views = cifar_augmentation_views(32, blur=True, action_norm="official")
    loader = SequenceLoader(
        source, views, num_observed=3, batch_size=batch, device=device, drop_last=True
    )
    encoder = resnet18_encoder(cifar_stem=True)
    total = steps + warmup
    model = SeqJEPA.from_encoder(
        encoder,
        EMATarget(encoder, total_steps=total),
        encoder_dim=512,
        action_dim=ACTION_DIM,
        last_token_action="zeros",
    )
    stamps: list[float] = []

    def batch_fn(net: nn.Module, b: Any, dev: torch.device) -> Any:
        _sync(dev)
        stamps.append(time.perf_counter())
        return net(b.views, b.actions)

    config = TrainConfig(
        epochs=1,
        max_steps=total,
        warmup_epochs=0.0,
        device=str(device),
        compile=compile_model,
        progress=False,
        log_every=10**9,
        out_dir=None,
    )
    fit(model, loader, config, batch_fn=batch_fn)
    _sync(device)
    stamps.append(time.perf_counter())
    deltas = [(b - a) * 1e3 for a, b in itertools.pairwise(stamps)][warmup:]
    return {"ms": statistics.median(deltas), "all_ms": deltas}


# --------------------------------------------------------------------------- official


class OfficialSeqJEPA(nn.Module):
    """seq-JEPA as the official code builds it for transformed views (written from its spec)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = resnet18_encoder(cifar_stem=True, zero_init_residual=True)
        self.target_encoder = copy.deepcopy(self.encoder)
        for p in self.target_encoder.parameters():
            p.requires_grad = False
        self.action_proj = nn.Sequential(
            nn.Linear(ACTION_DIM, 128, bias=False), nn.BatchNorm1d(128, affine=False)
        )
        layer = nn.TransformerEncoderLayer(
            d_model=640, nhead=4, dim_feedforward=4 * 640, batch_first=True
        )
        self.transformer = nn.TransformerEncoder(
            layer, num_layers=3, norm=nn.LayerNorm(640), enable_nested_tensor=False
        )
        self.agg_token = nn.Parameter(torch.zeros(1, 1, 640))
        self.predictor = nn.Sequential(
            nn.Linear(640 + 128, 1024, bias=False),
            nn.BatchNorm1d(1024),
            nn.ReLU(inplace=True),
            nn.Linear(1024, 512),
        )
        self.online_linprobe = nn.Linear(640, NUM_CLASSES)
        self.online_equiprobe = nn.Sequential(
            nn.Linear(1024, 1024), nn.ReLU(inplace=True),
            nn.Linear(1024, 1024), nn.ReLU(inplace=True),
            nn.Linear(1024, ACTION_DIM),
        )  # fmt: skip
        self.ema_decay = 0.996

    def forward(self, views: Tensor, params: Tensor, labels: Tensor) -> Tensor:
        b, v = views.shape[:2]
        m = v - 1
        params = F.normalize(params, p=2, dim=1)  # the official view-axis normalisation
        rel = params[:, 1:] - params[:, :-1]  # (B, M, 9)
        z = self.encoder(views[:, :m].reshape(b * m, *views.shape[2:])).reshape(b, m, -1)
        with torch.no_grad():
            target = self.target_encoder(views[:, m])
        tok_actions = torch.cat([rel[:, : m - 1], torch.zeros_like(rel[:, :1])], dim=1)
        e_tok = self.action_proj(tok_actions.reshape(b * m, -1)).reshape(b, m, -1)
        e_tok = torch.cat([e_tok[:, : m - 1], torch.zeros_like(e_tok[:, :1])], dim=1)
        tokens = torch.cat([self.agg_token.expand(b, -1, -1), torch.cat([z, e_tok], dim=-1)], 1)
        agg = self.transformer(tokens)[:, 0]
        e_pred = self.action_proj(rel[:, m - 1])
        pred = self.predictor(torch.cat([agg, e_pred], dim=-1))
        loss = 1 - F.cosine_similarity(pred, target, dim=1).mean()
        probe_cls = F.cross_entropy(self.online_linprobe(agg.detach()), labels)
        pair = torch.cat([z[:, 0], z[:, 1]], dim=-1).detach()
        probe_eq = F.mse_loss(self.online_equiprobe(pair), rel[:, 0])
        return loss + probe_cls + probe_eq

    @torch.no_grad()
    def update_moving_average(self) -> None:
        for t, o in zip(self.target_encoder.parameters(), self.encoder.parameters()):
            t.data = self.ema_decay * t.data + (1 - self.ema_decay) * o.data


def time_official(
    device: torch.device, *, batch: int, steps: int, warmup: int, bf16_cl: bool
) -> dict[str, Any]:
    """Median step time (ms) of the official-style step (views pre-made on the device)."""
    seed_everything(0)
    model = OfficialSeqJEPA().to(device)
    if bf16_cl:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-arg]
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    g = torch.Generator().manual_seed(1)
    views = torch.randn(batch, 4, 3, 32, 32, generator=g).to(device)
    params = torch.rand(batch, 4, ACTION_DIM, generator=g).to(device)
    labels = torch.randint(0, NUM_CLASSES, (batch,), generator=g).to(device)
    times = []
    model.train()
    for i in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16_cl):
            loss = model(views, params, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.update_moving_average()
        _sync(device)
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return {"ms": statistics.median(times), "all_ms": times}


# --------------------------------------------------------------------------- driver


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def run(
    device: torch.device,
    *,
    batch: int,
    steps: int,
    warmup: int,
    rounds: int,
    compile_model: bool,
) -> dict[str, Any]:
    """Time every implementation, alternating them over ``rounds``; return the result record.

    Alternating rounds expose both implementations to the same background load; the record
    keeps every step time, the median and the minimum (interference only adds time).
    """
    names = ["official", *(["official_bf16_cl"] if device.type == "cuda" else []), "ours"]
    all_ms: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        for name in names:
            if name == "ours":
                res = time_ours(
                    device, batch=batch, steps=steps, warmup=warmup, compile_model=compile_model
                )
            else:
                res = time_official(
                    device, batch=batch, steps=steps, warmup=warmup,
                    bf16_cl=name == "official_bf16_cl",
                )  # fmt: skip
            all_ms[name] += res["all_ms"]
            print(f"round {r}: {name:<18} {res['ms']:10.1f} ms/step (median)", flush=True)
    median = {k: statistics.median(v) for k, v in all_ms.items()}
    minimum = {k: min(v) for k, v in all_ms.items()}
    ratios = {f"{k}_over_ours": median[k] / median["ours"] for k in names if k != "ours"}
    ratios.update(
        {f"{k}_over_ours_min": minimum[k] / minimum["ours"] for k in names if k != "ours"}
    )
    for k, v in ratios.items():
        print(f"{k:<30} {v:6.2f}x")
    return {
        "benchmark": "bench_train_step",
        "date": _dt.date.today().isoformat(),
        "device": _device_name(device),
        "jepa_blocks": jepa_blocks.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "loadavg_1m_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "config": {
            "batch": batch,
            "paper_batch": 512,
            "num_observed": 3,
            "image_size": 32,
            "action_dim": ACTION_DIM,
            "encoder": "resnet18 (CIFAR stem)",
            "ours_amp": "bf16" if device.type == "cuda" else "off",
            "ours_channels_last": device.type == "cuda",
            "ours_compile": compile_model,
            "steps": steps,
            "warmup": warmup,
            "rounds": rounds,
        },
        "ms_per_step": median,
        "min_ms_per_step": minimum,
        "all_ms": all_ms,
        "ratios": ratios,
    }


def to_markdown(result: dict[str, Any]) -> str:
    """Render a result record as Markdown."""
    c = result["config"]
    lines = [
        f"# bench_train_step — {result['device']}",
        "",
        f"date {result['date']}, jepa-blocks {result['jepa_blocks']}, torch {result['torch']}, "
        f"python {result['python']}, threads {result['threads']}, "
        f"1-min load average at the end {result['loadavg_1m_at_end']}",
        "",
        f"batch {c['batch']} (paper {c['paper_batch']}), M_tr {c['num_observed']}, "
        f"{c['image_size']}×{c['image_size']} images, {c['action_dim']}-d actions, {c['encoder']}; "
        f"ours: amp {c['ours_amp']}, channels_last {c['ours_channels_last']}, "
        f"compile {c['ours_compile']}; {c['rounds']} alternating rounds of {c['steps']} timed "
        f"steps after {c['warmup']} warm-up each",
        "",
        "| implementation | median ms / step | ratio to ours | min ms / step | ratio to ours |",
        "|---|---:|---:|---:|---:|",
    ]
    med, mins = result["ms_per_step"], result["min_ms_per_step"]
    for k in med:
        lines.append(
            f"| {k} | {med[k]:.1f} | {med[k] / med['ours']:.2f} | {mins[k]:.1f} | "
            f"{mins[k] / mins['ours']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=None, help="default: 512 CUDA, 16 CPU")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (20 CUDA, 3 CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (5 CUDA, 1 CPU)")
    parser.add_argument(
        "--rounds", type=int, default=None, help="alternating rounds (1 CUDA, 3 CPU)"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile our model")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    parser.add_argument("--json", default=None, help="write the result record here")
    parser.add_argument("--markdown", default=None, help="write a Markdown table here")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    batch = args.batch or (512 if cuda else 16)
    steps = args.steps or (20 if cuda else 3)
    warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    if cuda:
        torch.backends.cudnn.benchmark = True
    rounds = args.rounds or (1 if cuda else 3)
    result = run(
        device, batch=batch, steps=steps, warmup=warmup, rounds=rounds, compile_model=args.compile
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    md = to_markdown(result)
    if args.markdown:
        Path(args.markdown).write_text(md, encoding="utf-8")
    print()
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
