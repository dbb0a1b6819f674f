"""Where torch work runs: one rule for training, scoring, evaluation and generation."""

from __future__ import annotations

from typing import Any


def device_name(device: Any) -> str:
    """What a benchmark line says it ran on: the GPU's name (as nvidia-smi prints it), else the CPU's model."""
    import platform

    import torch

    if getattr(device, "type", str(device)) == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def torch_device(want: str | bool | None = None) -> Any:
    """The torch device for `want`: True/None/"auto" = CUDA when present else CPU, False = CPU, or a name.

    An explicit "cuda" without a GPU is refused here, once, rather than failing deep inside a kernel.
    """
    import torch

    from dal_dist.errors import DalDistError

    if want is None or want is True or want == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if want is False:
        return torch.device("cpu")
    device = parse_device(want)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DalDistError(f"device {want!r}: no CUDA GPU is visible here; use cpu or auto")
    return device


def parse_device(want: str) -> Any:
    """The torch device a name means, whatever this machine has (a device on other nodes: Ray actors)."""
    import torch

    from dal_dist.errors import DalDistError

    try:
        return torch.device(want)
    except (RuntimeError, TypeError, ValueError):
        raise DalDistError(f"device {want!r}: not a device name; expected auto, cpu, cuda or cuda:N") from None
