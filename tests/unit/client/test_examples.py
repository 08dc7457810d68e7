"""The shipped example configs stay valid and honest: each parses with the parser that reads
it, and the example policy lists the current measurement of the example trainer."""

from __future__ import annotations

import tomllib
from pathlib import Path

from fedtee.attest.policy import Policy
from fedtee.cli.init import DEFAULT_TRAINER, trainer_measurement
from fedtee.cli.server import parse_server_config
from fedtee.client.config import parse_client_config

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def test_example_client_and_server_configs_parse() -> None:
    client = parse_client_config((EXAMPLES / "client.toml").read_text(), base_dir=EXAMPLES)
    assert client.trainer.target == DEFAULT_TRAINER
    server = parse_server_config((EXAMPLES / "server.toml").read_text(), base_dir=EXAMPLES)
    assert server is not None


def test_example_policy_lists_the_example_trainers_current_measurement() -> None:
    text = (EXAMPLES / "policy.toml").read_text()
    Policy.from_toml(text)  # the policy engine accepts it
    listed = tomllib.loads(text)["tee"]["sim"]["reference"]["measurement"]
    # If this fails, digits.py changed: regenerate examples/policy.toml (fedtee init --with-sim).
    assert listed == [trainer_measurement(DEFAULT_TRAINER).hex()]
