"""Twin model implementations (PyTorch and Keras 3), one subpackage per family.

Importing this package registers every family's specs. The subpackages' ``__init__`` modules
are light: they import neither torch nor TensorFlow.
"""

from models import alexnet  # noqa: F401  (registers)
