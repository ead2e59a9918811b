import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(ROOT, "..", "shared", "data")


def run_train(workdir, *overrides, config="configs/digits_transfer.py:runlocal", env=None, check=True,
              entry=("-m", "tljax.run")):
    """Runs ``python -m tljax.run`` (or ``entry``) in a fresh process, the way users run it."""
    cmd = [sys.executable, *entry, "--config", config, "--workdir", str(workdir), *overrides]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
    return result


@pytest.fixture
def runlocal_config():
    from tljax.config import load_file

    return load_file(os.path.join(ROOT, "configs/digits_transfer.py:runlocal"))


def pytest_collection_modifyitems(items):
    """Marks tests that start other processes (``-m "not subprocess"`` skips them); CI runs all."""
    for item in items:
        names = getattr(getattr(item, "function", None), "__code__", None)
        if names is not None and {"run_train", "subprocess", "Popen"} & set(names.co_names):
            item.add_marker(pytest.mark.subprocess)
