"""The silo example: a small convolutional network on scikit-learn's digits, with PyTorch.

The same data and non-IID split as :mod:`fedtee.client.examples.digits` (1797 8x8 images,
25 % held out as the global test set, Dirichlet label skew across clients), but the model is
a real vision model, trained through :class:`~fedtee.client.torch_adapter.TorchTrainer`:

    conv 3x3 (1 -> 16) - ReLU - conv 3x3 (16 -> 32) - ReLU - max-pool 2 -
    linear (512 -> 64) - ReLU - linear (64 -> 10)

about 40,000 float32 parameters in eight tensors (``conv1.weight``, ``conv1.bias``, ...).
Training is mini-batch SGD with momentum on the cross-entropy; it runs on the GPU when one is
present. Round hyper-parameters (all optional, strings as on the wire): ``lr``,
``local_epochs``, ``batch_size``, ``momentum``. Needs the ``torch`` and ``demo`` extras.

Use it with ``fedtee init DIR --with-sim --trainer
fedtee.client.examples.digits_cnn:DigitsCnnTrainer`` (see docs/silo.md); this file's bytes
are what a client's code measurement covers.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np

from fedtee.client.examples.digits import (
    NUM_CLASSES,
    Dataset,
    dirichlet_partition,
    test_set,
    train_set,
)
from fedtee.client.torch_adapter import (
    TorchTrainer,
    load_arrays,
    require_torch,
    select_device,
    state_dict_to_arrays,
)
from fedtee.client.trainer import Arrays, config_float, config_int
from fedtee.errors import ConfigError

if TYPE_CHECKING:
    import torch

SIDE = 8
DEFAULTS: dict[str, str] = {
    "lr": "0.05",
    "local_epochs": "2",
    "batch_size": "32",
    "momentum": "0.9",
}


def build_model(seed: int = 0) -> torch.nn.Module:
    """The network, with weights drawn from a generator seeded by ``seed``."""
    th = require_torch()
    nn = th.nn
    th.manual_seed(seed)
    model: torch.nn.Module = nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(1, 16, 3, padding=1),
            relu1=nn.ReLU(),
            conv2=nn.Conv2d(16, 32, 3, padding=1),
            relu2=nn.ReLU(),
            pool=nn.MaxPool2d(2),
            flatten=nn.Flatten(),
            fc1=nn.Linear(32 * (SIDE // 2) ** 2, 64),
            relu3=nn.ReLU(),
            fc2=nn.Linear(64, NUM_CLASSES),
        )
    )
    return model


def initial_arrays(seed: int = 0) -> Arrays:
    """Round 1's global model (what ``fedtee init`` writes as initial-model.safetensors)."""
    return {k: v.copy() for k, v in state_dict_to_arrays(build_model(seed).state_dict()).items()}


def _tensors(data: Dataset, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    torch = require_torch()
    images = torch.from_numpy(np.ascontiguousarray(data.features)).reshape(-1, 1, SIDE, SIDE)
    return images.to(device), torch.from_numpy(data.labels).to(device)


def loss_and_accuracy(
    module: torch.nn.Module, data: Dataset, device: torch.device
) -> tuple[float, float]:
    torch = require_torch()
    images, labels = _tensors(data, device)
    with torch.no_grad():
        logits = module(images)
        loss = float(torch.nn.functional.cross_entropy(logits, labels))
        accuracy = float((logits.argmax(dim=1) == labels).float().mean())
    return loss, accuracy


class DigitsCnnTrainer(TorchTrainer):
    """One client's share of the digits training set, trained as a CNN.

    ``evaluate`` uses the local share, or the global test set with ``config["split"] ==
    "test"``. ``device`` defaults to the GPU when present.
    """

    def __init__(
        self,
        *,
        partition: int,
        num_partitions: int,
        seed: int = 0,
        device: str = "auto",
        deterministic: bool = True,
    ) -> None:
        if not 0 <= partition < num_partitions:
            raise ConfigError(f"partition must be 0..{num_partitions - 1}, got {partition}")
        train = train_set()
        idx = dirichlet_partition(train.labels, num_partitions=num_partitions, seed=seed)[partition]
        self.data = Dataset(features=train.features[idx], labels=train.labels[idx])
        self.partition = partition
        torch = require_torch()
        # Per-client shuffling stream, so two clients never shuffle identically.
        self._generator = torch.Generator().manual_seed(seed * 100_003 + partition)
        super().__init__(
            module=build_model(seed),
            train=self._train,
            evaluate_fn=self._evaluate,
            device=device,
            deterministic=deterministic,
            seed=seed,
            # Batches of 32 8x8 images gain nothing from several threads, and on a shared
            # machine the spinning of torch's thread pool slows every client down.
            num_threads=1,
        )

    def _train(
        self, module: torch.nn.Module, config: dict[str, str], device: torch.device
    ) -> tuple[int, dict[str, float]]:
        torch = require_torch()
        merged = {**DEFAULTS, **config}
        lr = config_float(merged, "lr", 0.05)
        momentum = config_float(merged, "momentum", 0.9)
        epochs = config_int(merged, "local_epochs", 2, low=1, high=100)
        batch_size = config_int(merged, "batch_size", 32, low=1, high=4096)
        if not (0 < lr <= 10 and 0 <= momentum < 1):
            raise ConfigError(f"round config lr={lr}, momentum={momentum} out of range")
        images, labels = _tensors(self.data, device)
        optimiser = torch.optim.SGD(module.parameters(), lr=lr, momentum=momentum)
        n = int(labels.shape[0])
        for _ in range(epochs):
            order = torch.randperm(n, generator=self._generator).to(device)
            for start in range(0, n, batch_size):
                batch = order[start : start + batch_size]
                optimiser.zero_grad()
                loss = torch.nn.functional.cross_entropy(module(images[batch]), labels[batch])
                loss.backward()
                optimiser.step()
        module.train(False)  # evaluation mode
        train_loss, train_accuracy = loss_and_accuracy(module, self.data, device)
        return n, {"train_loss": train_loss, "train_accuracy": train_accuracy}

    def _evaluate(
        self, module: torch.nn.Module, config: dict[str, str], device: torch.device
    ) -> tuple[float, int, dict[str, float]]:
        data = test_set() if config.get("split") == "test" else self.data
        loss, accuracy = loss_and_accuracy(module, data, device)
        return loss, len(data), {"accuracy": accuracy}


def global_accuracy(arrays: Arrays, *, device: str = "cpu") -> float:
    """Accuracy of a global model on the held-out test set."""
    dev = select_device(device)
    module = build_model(0).to(dev)
    load_arrays(module, arrays)
    module.train(False)  # evaluation mode
    return loss_and_accuracy(module, test_set(), dev)[1]


__all__ = [
    "DEFAULTS",
    "DigitsCnnTrainer",
    "build_model",
    "global_accuracy",
    "initial_arrays",
    "loss_and_accuracy",
]
