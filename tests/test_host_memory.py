"""config.host_malloc: glibc keeping freed memory (the default), or an opt-in restart under jemalloc."""

import platform

import pytest

from tljax.train import host_memory

REALLOCATE = """
import resource, sys
import numpy as np
from tljax.train import host_memory
runs_on = host_memory.configure(sys.argv[1], restart=True)
for i in range(3):  # a 200 MB temporary per 'step', as XLA:CPU allocates them
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    np.ones(50_000_000, np.float32).sum()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(runs_on, host_memory.jemalloc_loaded(), faults)
"""


def last_step(mode, **env):
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", REALLOCATE, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, **env})
    runs_on, jemalloc, faults = out.stdout.splitlines()[-1].split()  # after jemalloc's "restarting" line
    return runs_on, jemalloc == "True", int(faults)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="host_malloc tunes glibc's malloc")
def test_host_malloc_keep_reuses_freed_memory_without_page_faults():
    runs_on, _, default_faults = last_step("default")
    assert runs_on == "default" and default_faults >= 100  # glibc gave the block back: its pages fault in again
    runs_on, jemalloc, kept_faults = last_step("keep")
    assert (runs_on, jemalloc) == ("keep", False) and kept_faults <= default_faults / 10
    with pytest.raises(ValueError, match="host_malloc='fast'.*'keep'"):
        host_memory.configure("fast")


@pytest.mark.skipif(host_memory.jemalloc_path() is None, reason="jemalloc is not installed here (apt install "
                    "libjemalloc2); the opt-in restart under it cannot be shown")
def test_host_malloc_jemalloc_restarts_the_command_under_jemalloc_and_says_so():
    _, _, default_faults = last_step("default")
    runs_on, jemalloc, faults = last_step("jemalloc")
    assert (runs_on, jemalloc) == ("jemalloc", True) and faults <= default_faults / 10


def test_host_malloc_never_restarts_unasked_and_jemalloc_without_it_says_how_to_get_it(monkeypatch):
    runs_on, jemalloc, _ = last_step("keep")  # the default: no restart, whatever is installed
    assert not jemalloc and runs_on == ("keep" if platform.libc_ver()[0] == "glibc" else "default")
    monkeypatch.setenv("TLJAX_JEMALLOC", "")
    with pytest.raises(ValueError, match="no libjemalloc found; install it .*apt install libjemalloc2"):
        host_memory.configure("jemalloc")
    monkeypatch.setenv("TLJAX_JEMALLOC", __file__)  # found but not loaded, and this process may not restart
    with pytest.raises(ValueError, match="is not loaded in this process; start it with LD_PRELOAD="):
        host_memory.configure("jemalloc", restart=False)
