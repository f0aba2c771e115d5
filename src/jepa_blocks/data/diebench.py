"""Reader for 3DIEBench (Garrido et al., ICML 2023; ``facebookresearch/SIE``) as view sequences,
as ``hafezgh/seq-jepa`` ``src/datasets.py`` (``Dataset_3DIEBench_MultipleViews``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
from torch import Tensor

from jepa_blocks._validation import check_bool, check_choice, check_int
from jepa_blocks.data.actions import relative_quaternions
from jepa_blocks.data.sequences import ViewSequence, check_index, mix_seed, standardize

__all__ = ["DIEBENCH_STATS", "ThreeDIEBench"]

Latent = Literal["rot", "rotcolor"]

#: Mean and std of 3DIEBench images (official seq-JEPA code).
DIEBENCH_STATS = ((0.5016, 0.5037, 0.5060), (0.1030, 0.0999, 0.0969))


class ThreeDIEBench(torch.utils.data.Dataset):
    """3DIEBench view sequences: ``views (M+1, 3, S, S)``, latents, relative actions, label.

    ``M + 1`` distinct views are drawn per item; ``params`` are their raw 7-value latents
    (rotation x, y, z, floor hue, light θ, light φ, light hue), ``(M+1, 7)``.

    Args:
        root: Dataset root holding the ``SYNSET/OBJ_ID`` folders.
        split: Selects the index files ``{split}_images.npy`` and ``{split}_labels.npy``.
        num_observed: ``M``.
        latent: ``"rot"`` (quaternion, 4-d action) or ``"rotcolor"`` (+ Δ floor hue, Δ light hue).
        image_size: Side of the resized views (official: 128).
        normalize: Standardise with :data:`DIEBENCH_STATS`.
        canonical: Sign-canonicalise the quaternions (``w ≥ 0``); the official code does not.
        index_dir: Folder of the index files (default: ``root``).
        views_per_object: Rendered views per object.
        seed: Base seed; item ``i`` of epoch ``e`` uses ``mix_seed(seed, e, i)``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        split: str = "train",
        num_observed: int = 3,
        latent: Latent = "rot",
        image_size: int = 128,
        normalize: bool = True,
        canonical: bool = False,
        index_dir: str | os.PathLike[str] | None = None,
        views_per_object: int = 50,
        seed: int = 0,
    ) -> None:
        check_choice(latent, "latent", get_args(Latent))
        check_int(views_per_object, "views_per_object")
        if check_int(num_observed, "num_observed") >= views_per_object:
            raise ValueError(
                f"num_observed + 1 = {num_observed + 1} views exceed the {views_per_object} "
                "views per object"
            )
        self.image_size = check_int(image_size, "image_size")
        self.normalize = check_bool(normalize, "normalize")
        self.canonical = check_bool(canonical, "canonical")
        self.seed = check_int(seed, "seed", minimum=-(1 << 63))
        self.root = Path(root)
        index = Path(index_dir) if index_dir is not None else self.root
        images_file, labels_file = (index / f"{split}_{kind}.npy" for kind in ("images", "labels"))
        for f in (images_file, labels_file):
            if not f.is_file():
                raise FileNotFoundError(f"3DIEBench index file {f} not found (split={split!r})")
        self.objects = [str(s) for s in np.load(images_file)]
        self.labels = torch.as_tensor(np.load(labels_file).astype(np.int64))
        if len(self.objects) != len(self.labels):
            raise ValueError(
                f"{images_file.name} lists {len(self.objects)} objects but {labels_file.name} "
                f"has {len(self.labels)} labels"
            )
        self.split = split
        self.num_observed = num_observed
        self.latent = latent
        self.views_per_object = views_per_object
        self.epoch = 0

    @property
    def action_dim(self) -> int:
        """4 for ``"rot"``, 6 for ``"rotcolor"``."""
        return 4 if self.latent == "rot" else 6

    def set_epoch(self, epoch: int) -> None:
        """Select the view draws of ``epoch``."""
        self.epoch = check_int(epoch, "epoch", minimum=0)

    def __len__(self) -> int:
        return len(self.objects)

    def object_dir(self, index: int) -> Path:
        """Folder of object ``index`` (the index entry without its leading ``/``)."""
        return self.root / self.objects[index].lstrip("/")

    def _image(self, path: Path) -> Tensor:
        from torchvision.io import ImageReadMode, decode_image
        from torchvision.transforms.v2 import functional as TF

        img = decode_image(str(path), mode=ImageReadMode.RGB)
        img = TF.to_dtype(img, torch.float32, scale=True)
        return TF.resize(img, [self.image_size, self.image_size], antialias=True)

    def __getitem__(self, index: int) -> ViewSequence:
        i = check_index(index, len(self))
        gen = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, i))
        chosen = torch.randperm(self.views_per_object, generator=gen)[: self.num_observed + 1]
        folder = self.object_dir(i)
        views = torch.stack([self._image(folder / f"image_{int(k)}.jpg") for k in chosen])
        files = [folder / f"latent_{int(k)}.npy" for k in chosen]
        latents = torch.stack([torch.as_tensor(np.load(f), dtype=torch.float64) for f in files])
        if latents.shape[-1] < 7:
            raise ValueError(
                f"latent files of {folder} must hold 7 values (rx, ry, rz, floor hue, light θ, "
                f"light φ, light hue), got {latents.shape[-1]}"
            )
        actions = relative_quaternions(latents[:, :3], canonical=self.canonical)
        if self.latent == "rotcolor":
            hues = latents[:, [3, 6]]
            actions = torch.cat((actions, hues[1:] - hues[:-1]), dim=-1)
        if self.normalize:
            views = standardize(views, *DIEBENCH_STATS)
        return ViewSequence(
            views, latents.float(), actions.float(), self.labels[i], torch.tensor(i)
        )
