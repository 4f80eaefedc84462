import gc
import weakref

import numpy as np

from nightcast.memory import release


class _Holder:
    def __init__(self) -> None:
        self.data = np.ones(1000)
        self.me = self  # a reference cycle: reference counting alone never frees it


def test_release_frees_what_only_reference_cycles_hold_now():
    gc.collect()
    gc.disable()
    try:
        ref = weakref.ref(_Holder())
        assert ref() is not None  # unreachable, yet alive until a collection
        release()
        assert ref() is None
    finally:
        gc.enable()
