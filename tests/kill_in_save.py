"""``python tests/kill_in_save.py STEP ARGS…``: ``python -m tljax.run ARGS…`` whose checkpoint save of
``STEP`` SIGKILLs the process after orbax has written every item into its temporary folder and
before the rename that commits it, leaving a partially written checkpoint behind.

The hook lives here, patched into ``tljax.checkpoint.manager``, so library code carries no test switch.
"""

import os
import signal
import sys

import orbax.checkpoint as ocp
from orbax.checkpoint.path import atomicity

from tljax import checkpoint

KILL_STEP = sys.argv[1]


class KillBeforeCommit(atomicity.AtomicRenameTemporaryPath):
    async def finalize(self, *args, **kwargs):
        if self.get_final().name == KILL_STEP:
            os.kill(os.getpid(), signal.SIGKILL)
        return await super().finalize(*args, **kwargs)


def manager(directory: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True,
                                           enable_async_checkpointing=False, temporary_path_class=KillBeforeCommit)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


if __name__ == "__main__":
    checkpoint.manager = manager
    from tljax.run import main

    main(sys.argv[2:])
