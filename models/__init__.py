"""Twin model implementations (PyTorch and Keras 3), one subpackage per family.

Importing this package imports every family subpackage, whose ``__init__`` registers its
specs. Those modules are light: they import neither torch nor TensorFlow.
"""

import importlib
import pkgutil

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.ispkg and _info.name != "common":
        importlib.import_module(f"{__name__}.{_info.name}")
