"""Throughput of the CIFAR-100 9-d augmentation pipeline: batched (ours) vs per-sample PIL.

Measures augmented sequence views per second for the seq-JEPA CIFAR-100 protocol (crop + flip,
colour jitter + grayscale, blur, solarize; M observed views + 1 target view per image):

* ``ours``: :class:`jepa_blocks.data.SequenceLoader`-style batched generation with
  :func:`jepa_blocks.data.cifar_augmentation_views` on the chosen device;
* ``per-sample``: a baseline written like the official code (``hafezgh/seq-jepa``
  ``src/datasets.py`` / ``src/augmentations.py``): each view drawn and applied one image at a time
  on a PIL image with ``torchvision.transforms.functional``, then ``to_tensor`` and ``normalize``.

Both are measured in the same run, interleaved, on random 32×32 uint8 images (no dataset
download). On CPU the numbers are per core (``torch.set_num_threads(1)``); the ratio is
ours / per-sample (best against best, and per interleaved pair).

Usage::

    python benchmarks/bench_data.py --device cpu --out benchmarks/results/data_cpu
    python benchmarks/bench_data.py --device cuda --out benchmarks/results/data_gpu
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import random
import time
from pathlib import Path

import numpy as np
import torch

CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)


def per_sample_view(img, *, blur_p: float, solarize_p: float, rng: random.Random):
    """One augmented view of a PIL image, drawn and applied per sample like the official code."""
    from torchvision.transforms import InterpolationMode, RandomResizedCrop
    from torchvision.transforms import functional as TF

    i, j, h, w = RandomResizedCrop.get_params(img, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3))
    out = TF.resized_crop(img, i, j, h, w, [32, 32], InterpolationMode.BICUBIC)
    if rng.random() < 0.5:
        out = TF.hflip(out)
    factors = [1.0, 1.0, 1.0, 0.0]
    if rng.random() < 0.8:
        order = torch.randperm(4).tolist()
        factors = [
            rng.uniform(0.6, 1.4),
            rng.uniform(0.6, 1.4),
            rng.uniform(0.8, 1.2),
            rng.uniform(-0.1, 0.1),
        ]
        ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
        for k in order:
            out = ops[k](out, factors[k])
    if rng.random() < 0.2:
        out = TF.rgb_to_grayscale(out, num_output_channels=3)
    sigma = 0.0
    if rng.random() < blur_p:
        sigma = rng.uniform(0.1, 2.0)
        out = TF.gaussian_blur(out, [3, 3], [sigma, sigma])
    if rng.random() < solarize_p:
        out = TF.solarize(out, 128)
    x = TF.normalize(TF.to_tensor(out), CIFAR100_MEAN, CIFAR100_STD)
    params = torch.tensor([i / 32, j / 32, h / 32, w / 32, *factors, sigma])
    return x, params


def bench_per_sample(images: np.ndarray, num_views: int, seconds: float) -> dict:
    """Views per second of the per-sample PIL pipeline (one process, one thread)."""
    from PIL import Image

    rng = random.Random(0)
    pil = [Image.fromarray(im) for im in images]
    done, n = 0, 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or done == 0:
        img = pil[n % len(pil)]
        views = [
            per_sample_view(img, blur_p=1.0, solarize_p=0.0, rng=rng) for _ in range(num_views - 1)
        ]
        views.append(per_sample_view(img, blur_p=0.1, solarize_p=0.2, rng=rng))
        torch.stack([v[0] for v in views])
        torch.stack([v[1] for v in views])
        done += num_views
        n += 1
    elapsed = time.perf_counter() - start
    return {"views": done, "seconds": elapsed, "views_per_s": done / elapsed}


def bench_ours(
    images: np.ndarray, num_views: int, batch_size: int, device: str, seconds: float
) -> dict:
    """Views per second of the batched pipeline on ``device`` (uint8 images resident there)."""
    from jepa_blocks.data import cifar_augmentation_views

    views_fn = cifar_augmentation_views(32)
    data = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)
    mean = torch.tensor(CIFAR100_MEAN, device=device)[:, None, None]
    std = torch.tensor(CIFAR100_STD, device=device)[:, None, None]
    gen = torch.Generator().manual_seed(0)

    def step(k: int) -> None:
        idx = torch.randint(0, data.shape[0], (batch_size,), generator=gen).to(device)
        x = data[idx].float().div_(255.0)
        views, params = views_fn(x, num_views=num_views, generator=gen)
        views = (views - mean) / std
        views_fn.actions(params)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for k in range(3):  # warm-up
        step(k)
    sync()
    done, k = 0, 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or done == 0:
        step(k)
        done += batch_size * num_views
        k += 1
        if device.startswith("cuda") and k % 10 == 0:
            sync()
    sync()
    elapsed = time.perf_counter() - start
    return {"views": done, "seconds": elapsed, "views_per_s": done / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num-views", type=int, default=4, help="M + 1 (paper: M_tr = 3)")
    parser.add_argument("--batch-size", type=int, default=512, help="sequences per batch (ours)")
    parser.add_argument("--seconds", type=float, default=10.0, help="time per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="measurements; the best is kept")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for both pipelines")
    parser.add_argument("--images", type=int, default=2048, help="random 32x32 images")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    args = parser.parse_args()

    import torchvision

    torch.set_num_threads(args.threads)
    rs = np.random.default_rng(0)
    images = rs.integers(0, 256, size=(args.images, 32, 32, 3), dtype=np.uint8)

    # Interleave the two pipelines so that load changes on a shared machine hit both alike.
    load_before = _loadavg()
    ours, base = [], []
    for _ in range(args.repeats):
        ours.append(bench_ours(images, args.num_views, args.batch_size, args.device, args.seconds))
        if not args.skip_baseline:
            base.append(bench_per_sample(images, args.num_views, args.seconds))
    best_ours = max(r["views_per_s"] for r in ours)
    result: dict = {
        "benchmark": "cifar100 9-d augmentation views/s",
        "date": _dt.date.today().isoformat(),
        "device": args.device,
        "device_name": _device_name(args.device),
        "cpu_threads": args.threads,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "num_views": args.num_views,
        "batch_size": args.batch_size,
        "seconds_per_run": args.seconds,
        "load_average_1min": [load_before, _loadavg()],
        "ours_views_per_s": best_ours,
        "ours_runs": [r["views_per_s"] for r in ours],
    }
    if base:
        best_base = max(r["views_per_s"] for r in base)
        pairs = [o["views_per_s"] / b["views_per_s"] for o, b in zip(ours, base)]
        result["per_sample_views_per_s"] = best_base
        result["per_sample_runs"] = [r["views_per_s"] for r in base]
        result["ratio"] = best_ours / best_base
        result["ratio_per_pair"] = pairs
        result["ratio_median_pair"] = float(np.median(pairs))
    print(json.dumps(result, indent=2))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        out.with_suffix(".md").write_text(_markdown(result))


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _markdown(r: dict) -> str:
    lines = [
        "# Data pipeline throughput (CIFAR-100 9-d augmentations)",
        "",
        f"Date {r['date']}; device `{r['device']}` ({r['device_name']}); "
        f"{r['cpu_threads']} CPU thread(s); torch {r['torch']}, torchvision {r['torchvision']}, "
        f"Python {r['python']}.",
        f"Sequences of {r['num_views']} views (M = {r['num_views'] - 1} + target); "
        f"batched pipeline batch {r['batch_size']} sequences; {r['seconds_per_run']:g} s per run, "
        "the two pipelines interleaved; best of the runs listed. 1-min load average before / "
        f"after: {r['load_average_1min'][0]} / {r['load_average_1min'][1]} "
        f"({os.cpu_count()} CPUs, shared machine).",
        "",
        "| pipeline | views/s | runs |",
        "|---|---:|---|",
        f"| ours (batched, `{r['device']}`) | {r['ours_views_per_s']:,.0f} | "
        + ", ".join(f"{v:,.0f}" for v in r["ours_runs"])
        + " |",
    ]
    if "per_sample_views_per_s" in r:
        lines.append(
            f"| per-sample PIL/torchvision (official-code style) | "
            f"{r['per_sample_views_per_s']:,.0f} | "
            + ", ".join(f"{v:,.0f}" for v in r["per_sample_runs"])
            + " |"
        )
        pairs = ", ".join(f"{v:.1f}" for v in r["ratio_per_pair"])
        lines += [
            "",
            f"Ratio ours / per-sample: **{r['ratio']:.1f}×** (best vs best); interleaved pairs "
            f"{pairs} (median {r['ratio_median_pair']:.1f}×).",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
