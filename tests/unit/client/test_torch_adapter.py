"""The PyTorch adapter: state_dict <-> named arrays without pickle, strict loading, devices."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedtee import tensors
from fedtee.errors import ConfigError

torch = pytest.importorskip("torch")

from fedtee.client import torch_adapter as ta  # noqa: E402
from fedtee.client.trainer import Trainer  # noqa: E402


def _module(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2)
    )


def test_state_dict_round_trips_through_safetensors_bytes() -> None:
    source, target = _module(0), _module(1)
    arrays = ta.state_dict_to_arrays(source.state_dict())
    # BatchNorm's buffers travel too, with their own dtypes (num_batches_tracked is int64).
    assert arrays["1.num_batches_tracked"].dtype == np.int64
    wire = tensors.decode(tensors.encode(arrays), copy=False)  # read-only views, as received
    ta.load_arrays(target, wire)
    for name, tensor in target.state_dict().items():
        assert torch.equal(tensor, source.state_dict()[name]), name


def test_cpu_arrays_share_the_module_memory() -> None:
    module = _module()
    arrays = ta.state_dict_to_arrays(module.state_dict())
    with torch.no_grad():
        module[0].weight.add_(1.0)
    assert np.array_equal(arrays["0.weight"], module[0].weight.detach().numpy())


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda a: a.pop("0.bias"), "missing ['0.bias']"),
        (lambda a: a.update({"extra": np.zeros(1, np.float32)}), "extra ['extra']"),
        (lambda a: a.update({"0.bias": np.zeros(4, np.float32)}), "0.bias: float32[4]"),
        (lambda a: a.update({"0.bias": np.zeros(3, np.float64)}), "0.bias: float64[3]"),
    ],
)
def test_a_model_that_does_not_fit_is_refused_before_any_write(change, needle) -> None:
    module = _module()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    arrays = {
        k: np.full_like(v, 7) for k, v in ta.state_dict_to_arrays(_module(1).state_dict()).items()
    }
    change(arrays)
    with pytest.raises(ConfigError, match="does not fit") as info:
        ta.load_arrays(module, arrays)
    assert needle in str(info.value)
    assert all(torch.equal(module.state_dict()[k], v) for k, v in before.items())


def test_dtypes_the_wire_cannot_carry_are_named() -> None:
    state = {"w": torch.zeros(2, dtype=torch.bfloat16)}
    with pytest.raises(ConfigError, match=r"bfloat16.*\.float\(\)"):
        ta.state_dict_to_arrays(state)


def test_device_selection() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert ta.select_device("auto").type == expected
    assert ta.select_device("cpu").type == "cpu"
    with pytest.raises(ConfigError, match="unknown torch device"):
        ta.select_device("abacus")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            ta.select_device("cuda:0")


def _trainer(seed: int) -> ta.TorchTrainer:
    def train(module, config, device):
        opt = torch.optim.SGD(module.parameters(), lr=0.1)
        x = torch.randn(8, 4, device=device)
        loss = module(x).pow(2).mean()
        loss.backward()
        opt.step()
        return 8, {"loss": float(loss.detach())}

    def evaluate(module, config, device):
        return 0.5, 8, {}

    return ta.TorchTrainer(
        module=_module(seed), train=train, evaluate_fn=evaluate, deterministic=True, seed=seed
    )


def test_trainer_fits_from_the_global_model_deterministically() -> None:
    first, second = _trainer(3), _trainer(3)
    assert isinstance(first, Trainer)
    global_arrays = ta.state_dict_to_arrays(_module(9).state_dict())
    frozen = {k: v.copy() for k, v in global_arrays.items()}
    for v in frozen.values():
        v.flags.writeable = False
    a = first.fit(frozen, {})
    b = second.fit(frozen, {})
    assert a.num_examples == 8 and a.metrics["loss"] > 0
    assert set(a.arrays) == set(global_arrays)
    assert all(np.array_equal(a.arrays[k], b.arrays[k]) for k in a.arrays)
    assert not np.array_equal(a.arrays["0.weight"], global_arrays["0.weight"])  # it trained
    assert all(np.array_equal(frozen[k], global_arrays[k]) for k in frozen)  # input untouched
    assert first.evaluate(frozen, {}).loss == 0.5


def test_the_adapter_never_pickles() -> None:
    tree = ast.parse(Path(ta.__file__).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (
            node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
        )
    }
    called = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert not imported & {"pickle", "dill", "cloudpickle", "joblib"}
    assert not called & {"load", "save", "loads", "dumps"}


def test_importing_fedtee_without_torch_works_and_using_the_adapter_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import fedtee.client, fedtee.client.torch_adapter as ta\n"
        "from fedtee.errors import ConfigError\n"
        "try:\n    ta.select_device()\nexcept ConfigError as e:\n    print('ERR', e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "ERR" in out and "fedtee[torch]" in out and "torch==2.13.0" in out


def test_thread_count_is_checked() -> None:
    with pytest.raises(ConfigError, match="num_threads"):
        ta.TorchTrainer(
            module=_module(),
            train=lambda *a: (0, {}),
            evaluate_fn=lambda *a: (0.0, 0, {}),
            num_threads=0,
        )


def test_fedtee_init_writes_the_trainer_modules_hyper_parameters(tmp_path: Path) -> None:
    import tomllib

    from fedtee.cli.init import InitOptions, server_toml
    from fedtee.client.examples import digits, digits_cnn

    for module, trainer in ((digits_cnn, "DigitsCnnTrainer"), (digits, "DigitsTrainer")):
        opts = InitOptions(
            directory=tmp_path, federation_id="f", trainer=f"{module.__name__}:{trainer}"
        )
        config = tomllib.loads(server_toml(opts))["rounds"]["config"]
        assert config == module.DEFAULTS
