"""Action-parameterised sequence data for seq-JEPA-style world models: batched image operations,
random transforms that return their parameters, action encodings, view generators, loaders and
image sources. Importing it imports neither torchvision nor matplotlib.
"""

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
