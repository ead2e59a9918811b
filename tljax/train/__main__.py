"""``python -m tljax.train --config configs/digits_transfer.py --workdir runs/digits [--config.k=v …]``"""

import logging
import sys

from tljax import distributed
from tljax.config import parse_args
from tljax.train import devices, host_memory
from tljax.train.faults import TrainingFault
from tljax.train.job import run


def main(argv=None):
    logging.getLogger("absl").setLevel(logging.ERROR)  # orbax's per-save chatter
    try:
        config, workdir = parse_args(sys.argv[1:] if argv is None else argv)
        # before any thread allocates; a command line (not a call with argv) may restart under jemalloc
        host_memory.configure(config.get("host_malloc", "auto"), restart=argv is None)
        distributed.initialize(config)  # before any device is touched; no-op for one process
        devices.use_compilation_cache(config.get("compilation_cache", devices.DEFAULT_COMPILATION_CACHE))
    except (ValueError, KeyError, FileNotFoundError) as e:
        sys.exit(f"error: {e.args[0] if e.args else e}")
    try:
        run(config, workdir)
    except TrainingFault as e:  # e.g. a NaN loss under nan_policy='stop': the message says what to do
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
