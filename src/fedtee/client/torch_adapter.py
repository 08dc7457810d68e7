"""The silo profile's PyTorch adapter: a ``torch.nn.Module`` as a :class:`Trainer`.

A federation moves models as named numpy arrays (safetensors on the wire); PyTorch keeps them
as a ``state_dict``. This module converts between the two without pickle anywhere: no
``torch.save`` / ``torch.load``, only raw tensor memory shared with numpy.

- :func:`state_dict_to_arrays`: every entry of a state dict as a numpy array. CPU tensors are
  shared, not copied (the arrays are views of the module's memory, valid until the module is
  trained again); GPU tensors are copied to the host once.
- :func:`load_arrays`: the server's arrays into a module's tensors in place, tensor by
  tensor, after checking that names, shapes and dtypes match exactly (a global model that
  does not fit the local code is a :class:`~fedtee.errors.ConfigError`, never a silent
  partial load).
- :class:`TorchTrainer`: ``fit`` loads the global model, calls the user's ``train`` function,
  and returns the module's state; ``evaluate`` loads and calls ``evaluate``. Device: the GPU
  when one is present (``device="auto"``), else the CPU; ``deterministic=True`` turns on
  deterministic algorithms and seeds torch's generator before every ``fit``; ``num_threads``
  caps torch's CPU threads (small models on a shared machine run faster with one).

PyTorch is an optional extra (``pip install 'fedtee[torch]'``; the test set-up pins
``torch==2.13.0``). Importing this module does not import torch; using it without torch
raises a ConfigError that says what to install.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from fedtee.client.trainer import Arrays, EvalResult, FitResult
from fedtee.errors import ConfigError

if TYPE_CHECKING:
    import torch

INSTALL_HINT = "pip install 'fedtee[torch]' (or pip install torch==2.13.0, the tested build)"

# torch dtype name -> the numpy dtype it shares memory with. Only dtypes that the safetensors
# reader accepts (fedtee.tensors): bfloat16 and bool have no checked numpy counterpart there.
_NUMPY_OF = {
    "float64": np.dtype("<f8"),
    "float32": np.dtype("<f4"),
    "float16": np.dtype("<f2"),
    "int64": np.dtype("<i8"),
    "int32": np.dtype("<i4"),
    "int16": np.dtype("<i2"),
    "int8": np.dtype("i1"),
    "uint8": np.dtype("u1"),
}


def require_torch() -> ModuleType:
    """Import torch, or say exactly what to install."""
    try:
        import torch
    except ImportError as exc:
        raise ConfigError(f"the PyTorch adapter needs PyTorch: {INSTALL_HINT}") from exc
    return torch


def _dtype_name(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def select_device(preference: str = "auto") -> torch.device:
    """``"auto"``: the first CUDA GPU when present, else the CPU; or exactly what is named
    (``"cpu"``, ``"cuda"``, ``"cuda:1"``). Naming a GPU that is not there is a ConfigError."""
    th = require_torch()
    if preference == "auto":
        chosen: torch.device = th.device("cuda" if th.cuda.is_available() else "cpu")
        return chosen
    try:
        device: torch.device = th.device(preference)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"unknown torch device {preference!r}") from exc
    if device.type == "cuda" and not th.cuda.is_available():
        raise ConfigError(f"device {preference!r} asked for, but no CUDA GPU is available")
    if device.type not in {"cpu", "cuda"}:
        raise ConfigError(f"device {preference!r}: only 'cpu', 'cuda[:N]' or 'auto' are supported")
    return device


def make_deterministic(seed: int) -> None:
    """Seed torch and use deterministic kernels only (an error, not a silent fallback, where
    an operation has none). On CUDA, cuBLAS additionally needs ``CUBLAS_WORKSPACE_CONFIG=:4096:8``
    in the environment before the process starts."""
    torch = require_torch()
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def state_dict_to_arrays(state: Mapping[str, torch.Tensor]) -> Arrays:
    """Named numpy arrays of a state dict, in its order; CPU tensors shared, not copied."""
    out: Arrays = {}
    for name, tensor in state.items():
        dtype = _NUMPY_OF.get(_dtype_name(tensor))
        if dtype is None:
            raise ConfigError(
                f"tensor {name!r} has dtype {tensor.dtype}; the wire carries only "
                f"{', '.join(sorted(_NUMPY_OF))} (convert it in the model, e.g. .float())"
            )
        host = tensor.detach()
        if host.device.type != "cpu":
            host = host.cpu()
        array: NDArray[Any] = host.contiguous().numpy()
        out[name] = array
    return out


def load_arrays(module: torch.nn.Module, arrays: Mapping[str, NDArray[Any]]) -> None:
    """Copy ``arrays`` into ``module``'s parameters and buffers in place.

    Every name of the module's state dict must be present with the same shape and dtype, and
    nothing else: the whole model is checked before the first tensor is written.
    """
    torch = require_torch()
    state = module.state_dict()
    missing = sorted(set(state) - set(arrays))
    extra = sorted(set(arrays) - set(state))
    differing = []
    for name in sorted(set(state) & set(arrays)):
        array = np.asarray(arrays[name])
        target = state[name]
        expected = _NUMPY_OF.get(_dtype_name(target))
        if tuple(array.shape) != tuple(target.shape) or array.dtype != expected:
            differing.append(f"{name}: {array.dtype}{list(array.shape)}")
    if missing or extra or differing:
        raise ConfigError(
            f"the global model does not fit this module: missing {missing}, extra {extra}, "
            f"different shape/dtype {differing}"
        )
    with torch.no_grad(), warnings.catch_warnings():
        # The arrays may be read-only views of the downloaded model; from_numpy only reads
        # them here (copy_ copies out), so torch's "not writable" warning does not apply.
        warnings.filterwarnings("ignore", message=".*not writable.*")
        for name, target in state.items():
            target.copy_(torch.from_numpy(np.asarray(arrays[name])))


TrainFn = Callable[
    ["torch.nn.Module", dict[str, str], "torch.device"], tuple[int, dict[str, float]]
]
"""``train(module, config, device) -> (num_examples, metrics)``: train ``module`` in place."""

EvalFn = Callable[
    ["torch.nn.Module", dict[str, str], "torch.device"], tuple[float, int, dict[str, float]]
]
"""``evaluate(module, config, device) -> (loss, num_examples, metrics)``."""


@dataclass(kw_only=True)
class TorchTrainer:
    """A :class:`~fedtee.client.trainer.Trainer` around a module and two functions.

    The module is moved to ``device`` once; each ``fit`` overwrites its state with the round's
    global model, so nothing from a previous round leaks into the next. The arrays that
    ``fit`` returns share memory with the module (CPU) and stay valid until the next call.
    """

    module: torch.nn.Module
    train: TrainFn
    evaluate_fn: EvalFn
    device: str = "auto"
    deterministic: bool = False
    seed: int = 0
    num_threads: int | None = None  # torch's CPU threads (process-wide); None: torch's default
    _device: Any = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        self._device = select_device(self.device)
        if self.num_threads is not None:
            if self.num_threads < 1:
                raise ConfigError(f"num_threads must be >= 1, got {self.num_threads}")
            require_torch().set_num_threads(self.num_threads)
        if self.deterministic:
            make_deterministic(self.seed)
        self.module.to(self._device)

    @property
    def torch_device(self) -> torch.device:
        device: torch.device = self._device
        return device

    def fit(self, arrays: Arrays, config: dict[str, str]) -> FitResult:
        load_arrays(self.module, arrays)
        if self.deterministic:
            # Every fit starts from the same seed: the same global model, config and local
            # state give the same update, so a run can be replayed and its receipts compared.
            require_torch().manual_seed(self.seed)
        self.module.train()
        num_examples, metrics = self.train(self.module, dict(config), self._device)
        return FitResult(
            arrays=state_dict_to_arrays(self.module.state_dict()),
            num_examples=num_examples,
            metrics=metrics,
        )

    def evaluate(self, arrays: Arrays, config: dict[str, str]) -> EvalResult:
        load_arrays(self.module, arrays)
        self.module.train(False)  # evaluation mode (same as .eval())
        torch = require_torch()
        with torch.no_grad():
            loss, num_examples, metrics = self.evaluate_fn(self.module, dict(config), self._device)
        return EvalResult(loss=loss, num_examples=num_examples, metrics=metrics)


__all__ = [
    "INSTALL_HINT",
    "EvalFn",
    "TorchTrainer",
    "TrainFn",
    "load_arrays",
    "make_deterministic",
    "require_torch",
    "select_device",
    "state_dict_to_arrays",
]
