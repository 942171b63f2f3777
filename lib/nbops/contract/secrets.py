"""Where a secret's value comes from: the environment, else the project's credentials file.

A template declares secrets by name (``API_TOKEN: Secret``); a run needs a value for each.
The value of ``NAME`` is the environment variable ``NAME`` when it is set, else the key
``NAME`` of the credentials file: the file ``NBOPS_CREDENTIALS`` names, else the one the
project's ``nbops.yaml`` names under ``secrets: {file: ...}`` (relative to the project
root). The file is YAML, a mapping of names to strings, and must not be tracked by git: in a
git work tree it has to be git-ignored, or it is refused (a credentials file that can be
committed will be). Values are checked here, before any record or kernel exists: a missing,
empty, non-text or too short value is a usage error naming the secret, never its value.

A run learns its secrets from :func:`for_run`: the values of those its template declares,
the names its kernel must not be given (every secret the driver of the run knows: the
names any template of the pipeline, sweep or loop declares, the credentials file's names,
and those ``NBOPS_SECRETS`` lists here) and a scrubber of every value among them: a run is
scrubbed of its driver's secrets, not only of its own.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..util.secrets import (
    MIN_LENGTH,
    SECRETS_VAR,
    Scrubber,
    fingerprint,
    fingerprint_key,
    names_in,
    secret_env,
    without,
)
from .config import config_file, read_section
from .limits import load_yaml
from .template import Template, reserved_secret_name

CREDENTIALS_VAR = "NBOPS_CREDENTIALS"  # path of a credentials file (wins over nbops.yaml)


def credentials_file(start: Path | None = None,
                     env: Mapping[str, str] | None = None) -> Path | None:
    """The credentials file in force, or None when neither the environment nor the
    project's ``nbops.yaml`` names one."""
    env = os.environ if env is None else env
    if env.get(CREDENTIALS_VAR):
        return Path(env[CREDENTIALS_VAR]).expanduser().resolve()
    config = config_file(start)
    if config is None:
        return None
    root = config.parent
    section = read_section(config, "secrets")
    if section is None:
        return None
    if not isinstance(section, dict) or not isinstance(section.get("file"), str):
        raise ConfigError(f"{config}: 'secrets' must be a mapping with 'file: PATH' (the "
                          "git-ignored credentials file, relative to the project root)")
    return (root / str(section["file"])).resolve()


def resolve(template: Template, *, env: Mapping[str, str] | None = None,
            start: Path | None = None) -> dict[str, str]:
    """The value of every secret ``template`` declares.

    Raises:
        ConfigError: a secret without a value (naming where it was looked for), a value
            unusable as a secret, or an unreadable or git-tracked credentials file.
    """
    if not template.secrets:
        return {}
    env = os.environ if env is None else env
    values: dict[str, str] = {}
    missing = [n for n in template.secrets if not env.get(n)]
    stored = _read_file(credentials_file(start, env)) if missing else {}
    for name in template.secrets:
        value = env.get(name) or stored.get(name)
        if value is None:
            raise ConfigError(_missing(template, name, credentials_file(start, env)))
        if type(value) is not str:
            raise ConfigError(f"secret {name} of template '{template.name}' must be text in "
                              "the credentials file (quote it)")
        if len(value) < MIN_LENGTH:
            raise ConfigError(f"secret {name} of template '{template.name}' is shorter than "
                              f"{MIN_LENGTH} characters: too short to be told apart from "
                              "ordinary text when nbops scrubs it from outputs; use a longer "
                              "value")
        values[name] = value
    return values


@dataclass
class RunSecrets:
    """What one run gets of the secrets: see :func:`for_run`."""

    values: dict[str, str] = field(default_factory=dict)  # its template's, by name
    withheld: frozenset[str] = frozenset()  # never in its kernel's environment as given
    scrubber: Scrubber = field(default_factory=Scrubber)  # every value its driver knows

    def kernel_env(self, base: Mapping[str, str]) -> dict[str, str]:
        """``base`` without any secret the run's driver knows, plus the run's own (each as
        the variable of its name, listed in ``NBOPS_SECRETS``)."""
        return {**without(base, {*self.withheld, SECRETS_VAR}), **secret_env(self.values)}


def declared(templates: Iterable[Template]) -> tuple[str, ...]:
    """Every secret name the templates declare, sorted: what a driver passes its runs."""
    return tuple(sorted({name for t in templates for name in t.secrets}))


def withheld_names(names: Iterable[str] = (), *, env: Mapping[str, str] | None = None,
                   start: Path | None = None) -> frozenset[str]:
    """The variables no kernel gets unless its template declares them: ``names`` (what the
    driver's templates declare), the names the credentials file holds (when it can be
    read: one that cannot is refused when a run needs it) and those ``NBOPS_SECRETS``
    lists in ``env``; a name the kernel relies on (``PATH``, ...) is never one."""
    env = os.environ if env is None else env
    found = {*names, *names_in(env)}
    try:
        found |= set(_read_file(credentials_file(start, env)))
    except ConfigError:
        pass
    return frozenset(n for n in found if reserved_secret_name(n) is None)


def for_run(template: Template, driver: Iterable[str] = (), *,
            env: Mapping[str, str] | None = None, start: Path | None = None) -> RunSecrets:
    """A run's secrets: the values of those ``template`` declares (:func:`resolve`), the
    names withheld from its kernel (:func:`withheld_names` of ``driver``, the names every
    template of its pipeline, sweep or loop declares, and its own), and a scrubber of
    every value it knows among them (the others' values from the environment, else the
    credentials file; ones too short or not text are skipped: they were never given).

    Raises:
        ConfigError: as :func:`resolve`.
    """
    env = os.environ if env is None else env
    values = resolve(template, env=env, start=start)
    withheld = withheld_names([*driver, *template.secrets], env=env, start=start)
    scrubber = Scrubber(values)
    others = sorted(withheld - set(values))
    stored: dict[str, object] = {}
    if any(not env.get(n) for n in others):
        try:
            stored = _read_file(credentials_file(start, env))
        except ConfigError:
            stored = {}
    for name in others:
        value = env.get(name) or stored.get(name)
        if isinstance(value, str) and len(value) >= MIN_LENGTH:
            scrubber.add(name, value)
    return RunSecrets(values, withheld, scrubber)


def lookup(name: str, *, env: Mapping[str, str] | None = None,
           start: Path | None = None) -> str | None:
    """One secret's value by name (the environment, else the credentials file), or None:
    what ``nbops.secret`` reads when a notebook runs by hand."""
    env = os.environ if env is None else env
    if env.get(name):
        return env[name]
    value = _read_file(credentials_file(start, env)).get(name)
    return value if type(value) is str else None


def fingerprints(template: Template, runs_dir: Path,
                 values: Mapping[str, str] | None = None) -> dict[str, str]:
    """Keyed fingerprints of the template's secrets (see ``util.secrets.fingerprint``):
    what a record and a cache key hold instead of the values. ``values`` default to
    :func:`resolve`'s."""
    if not template.secrets:
        return {}
    found = resolve(template) if values is None else values
    key = fingerprint_key(runs_dir)
    return {name: fingerprint(key, name, found[name]) for name in sorted(found)}


def _missing(template: Template, name: str, file: Path | None) -> str:
    where = (f"or add '{name}: ...' to the credentials file {file}" if file is not None else
             f"or name a git-ignored credentials file in nbops.yaml (secrets: {{file: "
             f".credentials.yaml}}) or in ${CREDENTIALS_VAR} and add '{name}: ...' to it")
    return (f"template '{template.name}' needs the secret {name}, which has no value: set "
            f"the environment variable {name} {where}. A secret is never a parameter.")


def _read_file(path: Path | None) -> dict[str, object]:
    if path is None:
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"the credentials file {path} does not exist; create it (and "
                          "git-ignore it) or set the secrets as environment variables") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the credentials file {path}: {exc}") from None
    _refuse_tracked(path)
    try:
        data = load_yaml(text, str(path))
    except Exception as exc:
        # the parser's message may quote the file's content: say where, not what
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        at = f" (line {line + 1})" if line is not None else ""
        raise ConfigError(f"the credentials file {path} is not valid YAML{at}; it must map "
                          "secret names to values") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(type(k) is str for k in data):
        raise ConfigError(f"the credentials file {path} must map secret names to values "
                          "(NAME: value)")
    return data


def _refuse_tracked(path: Path) -> None:
    """A credentials file inside a git work tree must be git-ignored."""
    try:
        inside = subprocess.run(["git", "-C", str(path.parent), "rev-parse",
                                 "--is-inside-work-tree"], capture_output=True, text=True,
                                timeout=10)
        if inside.returncode != 0 or inside.stdout.strip() != "true":
            return
        ignored = subprocess.run(["git", "-C", str(path.parent), "check-ignore", "-q",
                                  "--no-index", str(path)], capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return  # no git here: nothing can commit the file by accident
    if ignored.returncode != 0:
        raise ConfigError(f"the credentials file {path} is not git-ignored, so it could be "
                          f"committed; add '{path.name}' to .gitignore (nothing was run)")
