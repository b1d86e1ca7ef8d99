"""The collector policy of a process that owns a loaded engine (`promptgate.server.heap`)."""

from __future__ import annotations

import gc

from promptgate.server.heap import freeze_startup_heap, thaw_heap


def test_freeze_takes_the_live_objects_out_of_collections_and_thaw_gives_them_back() -> None:
    kept = [object() for _ in range(100)]
    try:
        freeze_startup_heap()
        frozen = gc.get_freeze_count()
        assert frozen > len(kept)
        # A full collection no longer walks them: only what was allocated since is tracked.
        assert len(gc.get_objects()) < frozen
    finally:
        thaw_heap()
    assert gc.get_freeze_count() == 0
    assert any(o is kept for o in gc.get_objects())
