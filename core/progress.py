"""How long work tells its caller how far it has come (the command line draws a bar from it)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol, TypeVar

T = TypeVar("T")
EVERY = 500


class Progress(Protocol):
    """Told what is being done and how much of its total is done, counted in `unit` (a total
    of None: not known in advance, as when paging through Apple's devices)."""

    def __call__(self, what: str, done: int, total: int | None, unit: str) -> None: ...


class Tally:
    """One step of long work: counts what is done and reports it every `every` items."""

    def __init__(
        self,
        progress: Progress | None,
        what: str,
        total: int | None,
        unit: str,
        every: int = EVERY,
    ) -> None:
        self.progress, self.what, self.total, self.unit = progress, what, total, unit
        self.done = self._reported = 0
        self._every = every
        if progress is not None:
            progress(what, 0, total, unit)

    def add(self, count: int = 1) -> None:
        """Count `count` more items done."""
        if self.progress is None:
            return
        self.done += count
        ended = self.total is not None and self.done >= self.total
        if self.done - self._reported >= self._every or ended:
            self._reported = self.done
            self.progress(self.what, self.done, self.total, self.unit)

    def each(self, items: Iterable[T]) -> Iterator[T]:
        """`items`, each counted once the next is asked for."""
        return iter(items) if self.progress is None else self._counted(items)

    def _counted(self, items: Iterable[T]) -> Iterator[T]:
        for item in items:
            yield item
            self.add()


SILENT = Tally(None, "", 0, "")
