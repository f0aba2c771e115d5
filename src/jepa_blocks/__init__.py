"""jepa-blocks: composable PyTorch blocks for self-supervised world models in the seq-JEPA family.

The top-level namespace re-exports the stable API. Sub-packages (``jepa_blocks.data``,
``jepa_blocks.metrics``, ...) hold the rest and are imported lazily by the user.
"""

from jepa_blocks._version import __version__

__all__ = ["__version__"]
