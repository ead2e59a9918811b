"""tljax: transfer learning in JAX/Flax. ``python -m tljax.run`` trains from a config file;
``tljax.finetune(weights, data, **overrides)`` does the same from Python and returns a model that
predicts and saves itself (``tljax.load_finetuned`` reads it back).

The public names load on first use, so ``import tljax`` stays fast (no JAX until needed).
"""

import importlib

_LAZY = {"finetune": "tljax.api", "load_finetuned": "tljax.export", "Finetuned": "tljax.export",
         "Preprocess": "tljax.data.preprocess"}
__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tljax' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
