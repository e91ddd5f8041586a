"""The cyclic garbage collector paused while a block makes many objects and no cycles: shared by the
reads and tables (``store_reads``, ``tables``), the dashboard's build and the CLI's own import of typer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while a block builds 10^5 objects that form no cycles
    (a table's records, its rows): each collection would walk every object built so far, which
    costs a third of a table's reads and a quarter of its rendering at 10^5 trials. Reference
    counting still frees everything; the collector runs again after the block (nested or
    concurrent blocks leave it on if it was on before the first). The objects the block made are
    then moved to the oldest generation (``gc.freeze`` then ``gc.unfreeze``: two list splices, and
    the young generation's count is reset): otherwise the first allocation after the block walks
    them all as young objects (~4 % of a 10,000-trial page), just before most of them are freed.
    A cycle among them is still collected, by the next full collection. Not where the process had
    frozen objects itself (``gc.unfreeze`` would thaw them too)."""
    import gc

    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            if not gc.get_freeze_count():
                gc.freeze()
                gc.unfreeze()
            gc.enable()
