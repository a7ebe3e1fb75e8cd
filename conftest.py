"""Root pytest configuration: tests and notebooks run at the ``smoke`` scale.

Kernels started by nbval inherit this environment, so chapter notebooks read
``I2MD_PROFILE=smoke`` too.
"""
import os

os.environ.setdefault("I2MD_PROFILE", "smoke")
