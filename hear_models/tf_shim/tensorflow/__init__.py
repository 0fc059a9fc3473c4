"""Not TensorFlow: a stand-in installed by hear-models where tensorflow is absent.

hearvalidator and heareval import tensorflow at module level for two things only:
``isinstance(model, tf.Module)`` and ``tf.test.is_gpu_available()``. This module gives
exactly those two names, so PyTorch models can be validated and evaluated without a
1.5 GB dependency. Install real tensorflow to replace it (``pip uninstall
hear-models-tf-shim`` first).
"""

HEAR_MODELS_SHIM = True
__version__ = "0.0.0+hear-models-shim"


class Module:
    """Nothing is ever an instance of this class: no TensorFlow model exists here."""


from . import test  # noqa: E402,F401
