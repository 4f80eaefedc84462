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


def test_the_flows_set_polars_allocator_before_it_loads_unless_the_environment_does():
    import os
    import subprocess
    import sys

    from nightcast.memory import ALLOCATOR, configure_allocator

    code = "import flows, os, polars; print(os.environ['_RJEM_MALLOC_CONF'])"
    env = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"}
    conf = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert conf.strip().endswith(ALLOCATOR["_RJEM_MALLOC_CONF"])  # polars appends it to its defaults: it wins
    own = {"_RJEM_MALLOC_CONF": "narenas:1"}
    configure_allocator(own)
    assert own == {"_RJEM_MALLOC_CONF": "narenas:1"}


def test_inside_the_block_a_collection_leaves_what_existed_before_it_to_the_end():
    from nightcast.memory import collections_skip_what_exists

    gc.collect()
    gc.disable()
    try:
        old = _Holder()
        before = weakref.ref(old)
        with collections_skip_what_exists():
            del old  # garbage now, but it was there when the block began: set aside
            during = weakref.ref(_Holder())
            release()
            assert during() is None and before() is not None
        release()
        assert before() is None
    finally:
        gc.enable()
