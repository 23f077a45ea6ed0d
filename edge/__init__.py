"""edge: image-classification CNNs (Caffe and ONNX) from a workstation to an NVIDIA Jetson."""

__version__ = "0.1.0"

from .errors import EdgeError  # noqa: E402
from .model import Model, Prediction  # noqa: E402
from .preprocess import Preprocess, load_image  # noqa: E402
from .runtime.sources import open_source  # noqa: E402

__all__ = ["EdgeError", "Model", "Prediction", "Preprocess", "load_image", "open_source", "__version__"]
