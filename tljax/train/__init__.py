"""Training one model with one strategy: ``step`` (pure jit-able functions), ``devices`` (mesh,
shardings, compilation), ``state`` (model and first state from a config), ``loop`` (``fit``),
``evaluate``, ``faults``, ``report`` and ``workdir``. Entry point: ``python -m tljax.run``."""
