"""pytest configuration shared by the unit tests and the notebook run (nbval).

Notebooks are executed under the smoke preset unless the caller chose another one: the kernels
nbval starts inherit this process's environment.
"""

import os

os.environ.setdefault("MAELIB_PRESET", "smoke")
os.environ.setdefault("MPLBACKEND", "Agg")
