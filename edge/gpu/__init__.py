"""The GPU data path on pycuda: host buffers in three memory modes (buffers.py), the fused preprocessing kernel
(kernels.py) and the double-buffered upload -> kernel -> engine -> download loop (pipeline.py).

Nothing here imports pycuda at module level: importing edge.gpu is safe on a machine without CUDA, and the first
call that needs the GPU raises a one-line EdgeError when pycuda or a device is missing.
"""

from .buffers import MEMORY_MODES, default_memory_mode, parse_memory_modes

__all__ = ["MEMORY_MODES", "default_memory_mode", "parse_memory_modes", "cuda_available"]


def cuda_available() -> tuple[bool, str]:
    """(True, device name) when pycuda imports and finds a CUDA device, else (False, the reason)."""
    try:
        import pycuda.driver as cuda
    except ImportError:
        return False, "pycuda is not installed"
    try:
        cuda.init()
        count = cuda.Device.count()
    except Exception as e:  # pycuda raises its own error types for a missing driver or device
        return False, f"CUDA cannot start: {e}"
    if count == 0:
        return False, "no CUDA device"
    return True, cuda.Device(0).name()
