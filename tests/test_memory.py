import gc
import weakref

import numpy as np
import pytest

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
    own = {"_RJEM_MALLOC_CONF": "narenas:1", "MALLOC_ARENA_MAX": "4"}
    configure_allocator(own)
    assert own == {"_RJEM_MALLOC_CONF": "narenas:1", "MALLOC_ARENA_MAX": "4"}


def test_the_heap_cap_goes_to_child_processes_unless_set_and_is_nothing_off_glibc(monkeypatch):
    from nightcast import memory

    calls = []
    monkeypatch.setattr(memory, "_libc_function", lambda name: lambda *a: calls.append((name, *a)))
    environ = {}
    memory.configure_allocator(environ)
    # a mapping that is not this process's environment: for the children it starts, not a mallopt here
    assert environ["MALLOC_ARENA_MAX"] == str(memory.ARENAS) and calls == []
    for own in ({"MALLOC_ARENA_MAX": "8"}, {"GLIBC_TUNABLES": "glibc.malloc.arena_max=6"}):
        kept = dict(own)
        memory.configure_allocator(kept)
        assert {k: v for k, v in kept.items() if k != "_RJEM_MALLOC_CONF"} == own  # the user's own choice stands
    monkeypatch.setattr(memory, "_libc_function", lambda name: None)  # macOS, musl: no glibc
    off_glibc = {}
    memory.configure_allocator(off_glibc)
    assert "MALLOC_ARENA_MAX" not in off_glibc
    monkeypatch.setattr(memory, "_libc_function", lambda name: lambda *a: calls.append((name, *a)))
    for name in ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES"):  # set, then removed: put back as found afterwards
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    memory.configure_allocator()  # this process's own environment: mallopt too
    assert calls == [("mallopt", memory._M_ARENA_MAX, memory.ARENAS)]


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


_HEAPS = """
import ctypes, sys, threading, time
if sys.argv[1] == "flows":
    import flows
import numpy as np

def work():
    for _ in range(100):
        blocks = [np.ones(10_000) for _ in range(50)]
        time.sleep(0.0005)

threads = [threading.Thread(target=work) for _ in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
libc = ctypes.CDLL("libc.so.6")
libc.open_memstream.restype = ctypes.c_void_p
buf, size = ctypes.c_char_p(), ctypes.c_size_t()
stream = libc.open_memstream(ctypes.byref(buf), ctypes.byref(size))
libc.malloc_info(0, ctypes.c_void_p(stream))
libc.fclose(ctypes.c_void_p(stream))
print(buf.value.decode().count("<heap nr="))
"""


def test_the_flows_cap_the_c_heaps_that_threads_allocate_from():
    # eight threads allocating at once: glibc's own default makes up to 8 heaps per core, each keeping its
    # freed pages; importing the flows caps them at ARENAS (and, in the environment, its child processes')
    import os
    import subprocess
    import sys

    from nightcast.memory import ARENAS, _libc_function

    if _libc_function("malloc_info") is None:
        pytest.skip("not glibc")
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}

    def heaps(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", _HEAPS, mode], env=env, capture_output=True, text=True, check=True)
        return int(out.stdout)

    assert heaps("plain") > ARENAS  # without the cap the workload makes more (9 on a 2-core machine)
    assert 1 <= heaps("flows") <= ARENAS
