"""Hydra's own configuration errors (an unknown option or key, an override that does not parse) as one line
that names the key and the valid choices, with a "did you mean" for a near miss."""
from __future__ import annotations

import difflib
import re
from typing import Iterable

from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

#: The exceptions Hydra raises while parsing the command line and composing the config.
CONFIG_ERRORS = (HydraException, OmegaConfBaseException)

_MISSING_OPTION = re.compile(r"Could not find '(?P<group>.+)/(?P<option>[^/']+)'.*?Available options in '[^']+':\n"
                             r"(?P<options>(?:\t[^\n]*\n?)*)", re.S)
_MISSING_CONFIG = re.compile(r"Could not find '(?P<group>[^']+)'")


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest choice, or nothing when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _choices(names: Iterable[str]) -> str:
    return ", ".join(sorted(names))


def _unknown_key(error: BaseException, override: str) -> str | None:
    """An override of a key the config does not have: the keys that level has."""
    cause = error.__cause__
    parent = getattr(cause, "parent_node", None)
    full_key = getattr(cause, "full_key", None)
    if not isinstance(parent, DictConfig) or not full_key:
        return None
    prefix, _, key = str(full_key).rpartition(".")
    keys = [str(k) for k in parent.keys() if str(k) != "hydra"]
    where = prefix or "the config"
    return f"{override}: {where} has no key {key!r}{did_you_mean(key, keys)}; its keys: {_choices(keys)}"


def one_line(error: BaseException) -> str:
    """The message of a Hydra configuration error on one line, naming the key and what is valid."""
    message = str(error)
    missing = _MISSING_OPTION.search(message)
    if missing:
        options = [line.strip() for line in missing["options"].splitlines() if line.strip()]
        group, option = missing["group"], missing["option"]
        return (f"{group}={option} is not an option of {group}{did_you_mean(option, options)}; "
                f"choose one of {_choices(options)}")
    overridden = re.match(r"Could not override '([^']+)'", message)
    if overridden:
        value = re.search(r"use \+(\S+)", message)
        unknown = _unknown_key(error, value[1] if value else overridden[1])
        if unknown:
            return unknown
    missing_config = _MISSING_CONFIG.search(message)
    if missing_config:
        return f"config {missing_config[1]!r} not found (is the folder given with --config-dir?)"
    lines = [line.strip() for line in message.splitlines()
             if line.strip() and not line.startswith(("See https://", "Config search path", "\tprovider="))]
    return "; ".join(lines)
