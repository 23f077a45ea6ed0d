"""Host and device memory for the GPU path, in three host memory modes:

    pageable  ordinary numpy memory. Copies to the device are synchronous and cannot overlap with compute.
    pinned    page-locked memory (cuMemHostAlloc). Copies run asynchronously on a stream, by DMA, at full speed.
    mapped    page-locked and mapped into the device's address space (DEVICEMAP). Kernels read and write it where
              it lies, with no copy. On a Jetson's integrated GPU host and device share the same DRAM, so this is
              true zero-copy; on a discrete GPU every access crosses PCIe.

The default follows the device: integrated GPU -> mapped, discrete -> pinned (`default_memory_mode`).
Everything runs in the device's primary context, which the CUDA runtime, TensorRT and PyTorch share, so device
pointers pass between them. (Since CUDA 3.2 every context can map host memory; CU_CTX_MAP_HOST has no effect.)
pycuda is imported inside functions only: the CPU path never loads it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import EdgeError

MEMORY_MODES = ("pageable", "pinned", "mapped")


def cuda_driver():
    """pycuda.driver, initialised, or a one-line EdgeError saying how to get it."""
    try:
        import pycuda.driver as cuda
    except ImportError as e:
        raise EdgeError(f"the GPU path needs pycuda ({e}); install it with `pip install 'edge[jetson]'` "
                        "(it compiles against CUDA: nvcc must be on PATH)") from None
    try:
        cuda.init()
    except cuda.Error as e:
        raise EdgeError(f"CUDA cannot start: {e}") from None
    return cuda


def default_memory_mode(integrated: bool, can_map_host_memory: bool) -> str:
    """Zero-copy where host and device share memory, pinned copies where a bus sits between them."""
    return "mapped" if integrated and can_map_host_memory else "pinned"


def parse_memory_modes(text: str | None, integrated: bool, can_map_host_memory: bool) -> list[str]:
    """`--memory pageable,pinned,mapped` (or None/"auto": the device's default) -> the modes to run, in order."""
    if not text or text == "auto":
        return [default_memory_mode(integrated, can_map_host_memory)]
    modes = [m.strip() for m in text.split(",") if m.strip()]
    for mode in modes:
        if mode not in MEMORY_MODES:
            raise EdgeError(f"memory mode must be one of {', '.join(MEMORY_MODES)}, not {mode!r}")
        if mode == "mapped" and not can_map_host_memory:
            raise EdgeError("this device cannot map host memory (CAN_MAP_HOST_MEMORY is 0): use pinned")
    return list(dict.fromkeys(modes))


@dataclass(frozen=True)
class DeviceFacts:
    name: str
    compute_capability: tuple[int, int]
    integrated: bool
    can_map_host_memory: bool
    total_memory: int

    @property
    def kind(self) -> str:
        return "integrated (shares host memory)" if self.integrated else "discrete"

    def to_dict(self) -> dict:
        return {"name": self.name, "compute_capability": ".".join(map(str, self.compute_capability)),
                "integrated": self.integrated, "can_map_host_memory": self.can_map_host_memory,
                "total_memory_mib": self.total_memory // 2**20}


_PRIMARY_CONTEXTS: dict = {}  # device index -> its retained primary context, kept until the process ends


class GpuContext:
    """The primary context of one CUDA device, made current for the life of the `with` block.

    The context is retained once per process and never released early, so a kernel compiled in it (kernels.py
    caches them per device) and buffers made in it stay valid from one `with` block to the next."""

    def __init__(self, index: int = 0):
        cuda = cuda_driver()
        if cuda.Device.count() <= index:
            raise EdgeError(f"no CUDA device {index} (this machine has {cuda.Device.count()})")
        self.device = cuda.Device(index)
        attribute = cuda.device_attribute
        self.facts = DeviceFacts(
            name=self.device.name(),
            compute_capability=self.device.compute_capability(),
            integrated=bool(self.device.get_attribute(attribute.INTEGRATED)),
            can_map_host_memory=bool(self.device.get_attribute(attribute.CAN_MAP_HOST_MEMORY)),
            total_memory=self.device.total_memory(),
        )
        if index not in _PRIMARY_CONTEXTS:
            _PRIMARY_CONTEXTS[index] = self.device.retain_primary_context()
        self.context = _PRIMARY_CONTEXTS[index]

    def __enter__(self) -> GpuContext:
        self.context.push()
        return self

    def __exit__(self, *exc) -> None:
        import pycuda.driver as cuda

        try:
            cuda.Context.synchronize()
        finally:
            cuda.Context.pop()


class HostBuffer:
    """A host numpy array in one memory mode. `device_pointer` is where a kernel sees it (mapped mode only)."""

    def __init__(self, shape: tuple[int, ...], dtype, mode: str):
        if mode not in MEMORY_MODES:
            raise EdgeError(f"memory mode must be one of {', '.join(MEMORY_MODES)}, not {mode!r}")
        self.mode = mode
        self.device_pointer: int | None = None
        if mode == "pageable":
            self.array = np.empty(shape, dtype)
            return
        import pycuda.driver as cuda

        flags = cuda.host_alloc_flags.DEVICEMAP if mode == "mapped" else 0
        self.array = cuda.pagelocked_empty(shape, dtype, mem_flags=flags)
        if mode == "mapped":
            self.device_pointer = int(self.array.base.get_device_pointer())


class DeviceBuffer:
    """Linear device memory for `shape` elements of `dtype`."""

    def __init__(self, shape: tuple[int, ...], dtype):
        import pycuda.driver as cuda

        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self.allocation = cuda.mem_alloc(max(self.nbytes, 1))

    @property
    def pointer(self) -> int:
        return int(self.allocation)


def upload(device: DeviceBuffer, host: HostBuffer, stream, rows: int | None = None) -> None:
    """Host -> device: the host array, or its first `rows` rows (a partial batch in a buffer sized for a full one).
    Pinned: queued on `stream`. Pageable: synchronous (pycuda's async copy needs page-locked memory); it runs on
    the legacy default stream, which waits for every other stream, as pageable copies do."""
    import pycuda.driver as cuda

    array = host.array if rows is None else host.array[:rows]
    if host.mode == "pinned":
        cuda.memcpy_htod_async(device.allocation, array, stream)
    elif host.mode == "pageable":
        cuda.memcpy_htod(device.allocation, array)
    else:
        raise ValueError("mapped memory is read in place; it has no upload")


def download(host: HostBuffer, device: DeviceBuffer, stream) -> None:
    """Device -> host, the mirror of `upload`."""
    import pycuda.driver as cuda

    if host.mode == "pinned":
        cuda.memcpy_dtoh_async(host.array, device.allocation, stream)
    elif host.mode == "pageable":
        cuda.memcpy_dtoh(host.array, device.allocation)
    else:
        raise ValueError("mapped memory is written in place; it has no download")
