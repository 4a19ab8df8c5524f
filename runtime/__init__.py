"""gradc's runtime: compiled-function objects (argument checks, execution of emitted code)."""
from .checks import check_arguments
from .numpy_kernel import NumpyKernel

__all__ = ["check_arguments", "NumpyKernel"]
