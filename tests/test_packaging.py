"""Set-up promises: environment.yml matches pyproject.toml; README and CI agree."""
from __future__ import annotations

import re
from pathlib import Path

import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:  # type: ignore[type-arg]
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_lists_the_same_dependencies() -> None:
    deps = {Requirement(d).name.lower(): str(Requirement(d).specifier)
            for d in _pyproject()["project"]["dependencies"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = {}
    for item in env["dependencies"]:
        if isinstance(item, str) and not item.startswith(("python", "pip")):
            req = Requirement(item)
            conda[req.name.lower()] = str(req.specifier)
    assert conda == deps


def test_torch_extra_admits_the_local_cpu_build() -> None:
    extras = _pyproject()["project"]["optional-dependencies"]
    torch = Requirement(extras["torch"][0])
    assert torch.name == "torch" and Version("2.13.0") in torch.specifier


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", text, re.S)
    assert block, "README.md must open with a code block of set-up commands"
    return [line for line in block.group(1).splitlines() if line.strip() and
            not line.lstrip().startswith("#")]


def test_readme_opens_with_two_commands_and_ci_runs_the_test_one() -> None:
    commands = readme_commands()
    assert len(commands) == 2
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert commands[1].strip() in ci
    assert "pytest" in commands[1] and "nbops" in commands[0]
