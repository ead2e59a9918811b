"""XLA:CPU forms of Flax's layers, used by a model built with ``cpu_kernels=True``.

Each takes the place of one plain op and equals it in parameters (names, shapes, initial values)
and in values up to float32 summation order, so checkpoints load either way; they exist only
because XLA:CPU runs them faster (figures in PERFORMANCE.md). ``Dropout`` is the one exception in
values: same rate (to 1/65536) and scaling, other masks. Not for other backends (see ``dots``).
"""

from tljax.models.xla_cpu.batchnorm import BatchNorm
from tljax.models.xla_cpu.conv import Conv
from tljax.models.xla_cpu.dots import Dense
from tljax.models.xla_cpu.dropout import Dropout
from tljax.models.xla_cpu.pooling import max_pool_3x3_s2
from tljax.models.xla_cpu.residual import residual_relu

__all__ = ["BatchNorm", "Conv", "Dense", "Dropout", "max_pool_3x3_s2", "residual_relu"]
