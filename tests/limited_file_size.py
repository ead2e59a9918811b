"""``python tests/limited_file_size.py BYTES ARGS…``: ``python -m tljax.run ARGS…`` in a process that may
not write files larger than BYTES (``RLIMIT_FSIZE``): a full disk without needing one."""

import resource
import signal
import sys

if __name__ == "__main__":
    limit = int(sys.argv[1])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    from tljax.run import main

    main(sys.argv[2:])
