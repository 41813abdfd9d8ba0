"""Where the configs are (the package's conf/, in the repository or installed) and how to compose them
outside a Hydra app (the Python API, tests, benchmarks, tools), as `sip-train` would."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, OmegaConf, open_dict


def _config_dir() -> Path:
    """conf/ inside the installed package, else at the top of the repository (a checkout, `pip install -e .`)."""
    packaged = Path(__file__).resolve().with_name("conf")
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[1] / "conf"


def _expose_plugins() -> None:
    """Hydra finds plugins by listing the folders of the `hydra_plugins` namespace on sys.path. An editable
    install (`pip install -e .`) maps the packages without putting their folder there: add it."""
    root = Path(__file__).resolve().parents[1]
    if (root / "hydra_plugins").is_dir() and str(root) not in sys.path:
        sys.path.append(str(root))


CONF = _config_dir()
_expose_plugins()


def search_path_overrides(config_dirs: Sequence[str | Path]) -> list[str]:
    """The override that adds user config folders to Hydra's search path (what `--config-dir` does)."""
    if not config_dirs:
        return []
    return ["hydra.searchpath=[" + ",".join(f"file://{Path(d).resolve()}" for d in config_dirs) + "]"]


def compose_config(overrides: Sequence[str], run_dir: str | Path | None = None,
                   config_dirs: Sequence[str | Path] = ()) -> DictConfig:
    """conf/config.yaml with Hydra overrides (and user config folders), fully resolved as in a real run
    (`${hydra:runtime.choices...}` included), so it no longer depends on Hydra's global state: a later
    composition cannot change it. `run_dir` stands in for Hydra's output directory, which exists only in a
    real run; without it (and without a `run_dir=` override) the run directory is the one `hydra.run.dir` names.

    Raises:
        hydra.errors.HydraException: an unknown option or key, or an override that does not parse.
        ValueError: one line naming the key, if an interpolation cannot be resolved.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from sip_train import resolvers  # noqa: F401 - registers ${run_name:}, which the default hydra.run.dir uses
    from sip_train.startup import check_resolvable

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, *search_path_overrides(config_dirs)], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        if run_dir is not None:
            cfg.run_dir = str(run_dir)
        elif OmegaConf.is_interpolation(cfg, "run_dir"):  # Hydra's output directory: not set by an override
            cfg.run_dir = str(cfg.hydra.run.dir)
        del cfg.hydra
    check_resolvable(cfg)
    resolved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))  # (OmegaConf.resolve rejects list results)
    OmegaConf.set_struct(resolved, True)
    return resolved
