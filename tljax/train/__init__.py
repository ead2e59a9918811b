"""Training: ``step`` (pure jit-able functions) and ``loop`` (the job). ``python -m tljax.train``."""
