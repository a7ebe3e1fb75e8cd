"""i2md_lib: the library behind the I²MD book (CMD, DNA, IMD on skeleton sequences).

Tensors use the layout ``(N, C, T, V, M)`` everywhere: clips, xyz, frames, joints,
bodies (25 and 2 for NTU, 20 and 1 for MSR Action3D: ``i2md_lib.skeleton``). Start with :class:`i2md_lib.config.ExperimentConfig` and
:func:`i2md_lib.train.pretrain`; ``ARCHITECTURE.md`` lists every module.
"""
from .config import PROFILES, ExperimentConfig, active_profile

__version__ = "0.1.0"
__all__ = ["ExperimentConfig", "PROFILES", "active_profile", "__version__"]
