"""The common part of the module forms of functions (losses, rates, block-local objectives)."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

__all__: list[str] = []


class FunctionModule(nn.Module):
    """An ``nn.Module`` that stores a function's validated keyword options and passes them on.

    A subclass validates its options in ``__init__``, stores each as the attribute named like the
    function's keyword and lists those names in ``_options``; its ``forward`` calls the function
    with ``**self._kwargs()``. :meth:`extra_repr` shows the options named in ``_shown`` (default:
    all of ``_options``), in that order.
    """

    #: The stored keyword options, in the order :meth:`extra_repr` shows them.
    _options: ClassVar[tuple[str, ...]] = ()
    #: The options :meth:`extra_repr` shows; ``None``: all of ``_options``.
    _shown: ClassVar[tuple[str, ...] | None] = None

    def _kwargs(self) -> dict[str, Any]:
        """The stored options as keyword arguments of the function."""
        return {name: getattr(self, name) for name in self._options}

    def extra_repr(self) -> str:
        shown = self._options if self._shown is None else self._shown
        return ", ".join(f"{name}={getattr(self, name)!r}" for name in shown)
