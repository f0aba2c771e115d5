"""The common part of the module forms of functions (losses, rates, block-local objectives)."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

__all__: list[str] = []


class FunctionModule(nn.Module):
    """An ``nn.Module`` that stores a function's validated keyword options and passes them on.

    A subclass stores each option as the attribute named like the function's keyword, lists the
    names in ``_options`` and calls the function with ``**self._kwargs()`` in ``forward``.
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
