"""Device and dtype resolution with the V100 rules (fp16 only below compute capability 8.0)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import torch

from medvlm.runtime.config import DType, Quantization
from medvlm.runtime.errors import DeviceError, QuantizationError

__all__ = ["Placement", "resolve_placement"]

_TORCH_DTYPES = {
    DType.FLOAT16: torch.float16,
    DType.BFLOAT16: torch.bfloat16,
    DType.FLOAT32: torch.float32,
}


@dataclass(frozen=True)
class Placement:
    """Where and in what precision the model runs."""

    device: torch.device
    dtype: torch.dtype
    quantization: Quantization
    compute_capability: tuple[int, int] | None

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


def resolve_placement(device: str, dtype: DType, quantization: Quantization) -> Placement:
    """Pick device and dtype: fp16 on CUDA, fp32 on CPU by default; refuse what cannot run.

    bf16 is refused on GPUs below compute capability 8.0 (V100 is 7.0), decided by the capability,
    not by ``torch.cuda.is_bf16_supported()``, which can say True through emulation. NF4 needs CUDA
    and the optional ``bitsandbytes`` package.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    capability: tuple[int, int] | None = None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {device!r} was requested but CUDA is not available in this torch build "
                f"({torch.__version__}): install a CUDA build of torch or use device 'cpu'"
            )
        major, minor = torch.cuda.get_device_capability(dev)
        capability = (major, minor)
    if dtype is DType.AUTO:
        torch_dtype = torch.float16 if dev.type == "cuda" else torch.float32
    else:
        torch_dtype = _TORCH_DTYPES[dtype]
    if torch_dtype == torch.bfloat16 and capability is not None and capability < (8, 0):
        raise DeviceError(
            f"bfloat16 needs compute capability >= 8.0; this GPU has {capability[0]}.{capability[1]} "
            "(V100 is 7.0): use dtype 'float16'"
        )
    if quantization is Quantization.NF4:
        if dev.type != "cuda":
            raise QuantizationError(
                "4-bit NF4 quantization runs on CUDA only: use quantization 'none' on CPU"
            )
        if importlib.util.find_spec("bitsandbytes") is None:
            raise QuantizationError(
                "4-bit NF4 quantization needs the bitsandbytes package, which is not installed: "
                "`pip install 'radcheck[nf4]'` or use quantization 'none'"
            )
    return Placement(
        device=dev, dtype=torch_dtype, quantization=quantization, compute_capability=capability
    )
