"""Evaluate a trained network again: on its run's fixed validation set (the numbers of the run's final
validation), or on another one drawn with other problem or data parameters that keep the shapes
(`problem.noise=0.2`, `data.val_size=1024`, `seed=7`). Metrics and figures go to <run dir>/eval/<name>/."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf

from sip_train.hydra_errors import did_you_mean

#: What an evaluation may change: the problem's parameters, the validation data and its seed, the device.
CHANGEABLE = ("problem.", "data.", "seed", "figure_examples", "trainer.accelerator")


class EvaluationError(ValueError):
    """A run or override that cannot be evaluated (one line naming it)."""


def locate(target: str | Path) -> tuple[Path, Path]:
    """(run directory, checkpoint) of a run directory (its last checkpoint) or of a checkpoint file."""
    target = Path(target)
    if target.is_file():
        run_dir = target.parent.parent if target.parent.name == "checkpoints" else target.parent
        return run_dir, target
    checkpoint = target / "checkpoints" / "last.ckpt"
    if not checkpoint.is_file():
        raise EvaluationError(f"{target}: neither a checkpoint file nor a run directory with checkpoints/last.ckpt")
    return target, checkpoint


def run_config(run_dir: Path) -> DictConfig:
    """The run's resolved config: .hydra/config.yaml, its `${hydra:...}` values read from .hydra/hydra.yaml."""
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        raise EvaluationError(f"{run_dir}: no .hydra/config.yaml, so the run's configuration is unknown")
    config = OmegaConf.create(path.read_text().replace("${hydra:", "${hydra."))  # Hydra's values as plain keys
    hydra_file = run_dir / ".hydra" / "hydra.yaml"
    if hydra_file.is_file():
        config.hydra = OmegaConf.load(hydra_file).hydra
    return OmegaConf.create({key: OmegaConf.to_container(config[key], resolve=True) if OmegaConf.is_config(config[key])
                             else config[key] for key in config if key != "hydra"})


def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """The run's config with evaluation overrides; an override outside CHANGEABLE (a whole block such as
    problem=heat included) or of an unknown key is refused in one line."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    changed = cfg.copy()
    for override, parsed in zip(overrides, OverridesParser.create().parse_overrides(list(overrides))):
        key = parsed.key_or_group
        if not any(key == k or (k.endswith(".") and key.startswith(k)) for k in CHANGEABLE):
            what = "the network" if key.startswith("network") else "what was trained"
            raise EvaluationError(f"{override}: an evaluation keeps {what}; it may change "
                                  f"{', '.join(k + ('*' if k.endswith('.') else '') for k in CHANGEABLE)}")
        current = OmegaConf.select(changed, key, default=KeyError)
        if current is KeyError:
            parent, _, name = key.rpartition(".")
            node = OmegaConf.select(changed, parent) if parent else changed
            keys = list(node.keys()) if isinstance(node, DictConfig) else []
            raise EvaluationError(f"{override}: the run has no key {key}{did_you_mean(name, keys)}; "
                                  f"{parent or 'its config'} has {', '.join(map(str, keys))}")
        OmegaConf.update(changed, key, parsed.value(), merge=False)
    return changed


def _eval_name(overrides: Sequence[str]) -> str:
    return re.sub(r"[^\w.,=+-]", "_", ",".join(overrides)) or "val"


def evaluate(target: str | Path, overrides: Sequence[str] = (), name: str | None = None) -> dict[str, Any]:
    """Evaluate the network of a run directory (its last checkpoint) or of a checkpoint file on the run's
    validation set, changed by `overrides`; prints nothing, writes <run dir>/eval/<name>/metrics.json and
    figures/examples.png.

    Returns:
        {"metrics": {name: value}, "step": the checkpoint's step, "checkpoint", "eval_dir", "overrides"}
    Raises:
        EvaluationError: no such run or checkpoint, or an override that changes the network or the shapes.
    """
    import matplotlib.pyplot as plt
    import torch
    from hydra.utils import instantiate
    from lightning.pytorch import Trainer

    from sip_train import console, plots
    from sip_train.checkpoints import read_checkpoint
    from sip_train.module import InverseProblemModule
    from sip_train.problems.base import batch_rows

    console.silence_known_warnings()
    run_dir, checkpoint_path = locate(target)
    original = run_config(run_dir)
    cfg = apply_overrides(original, overrides)
    trained_problem = instantiate(original.problem)
    module = InverseProblemModule(cfg.problem, cfg.optimizer, cfg.network, cfg.seed, figure_examples=0)
    shapes = {"x": (tuple(trained_problem.x_shape), tuple(module.problem.x_shape)),
              "y": (tuple(trained_problem.y_shape), tuple(module.problem.y_shape))}
    changed = [f"{part} {list(before)} -> {list(after)}" for part, (before, after) in shapes.items() if before != after]
    if changed:
        raise EvaluationError(f"{' '.join(overrides)} changes the shapes ({', '.join(changed)}); the network was "
                              "trained on the run's shapes")
    try:
        checkpoint = read_checkpoint(checkpoint_path)
    except ValueError as error:
        raise EvaluationError(str(error)) from error
    weights = {key.removeprefix("network."): value for key, value in checkpoint["state_dict"].items()
               if key.startswith("network.")}
    module.network.load_state_dict(weights)
    data = instantiate(cfg.data, problem=module.problem, seed=cfg.seed)
    eval_dir = run_dir / "eval" / (name or _eval_name(overrides))
    trainer = Trainer(accelerator=cfg.trainer.get("accelerator", "auto"), devices=1, logger=False,
                      precision=cfg.trainer.get("precision", "32-true"), enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(eval_dir))
    trainer.validate(module, datamodule=data, verbose=False)
    metrics = {key.removeprefix("val/"): float(value) for key, value in trainer.callback_metrics.items()
               if key.startswith("val/")}
    step = int(checkpoint["global_step"])
    eval_dir.mkdir(parents=True, exist_ok=True)
    record = {"run_dir": str(run_dir), "checkpoint": str(checkpoint_path), "step": step, "overrides": list(overrides),
              "val_size": cfg.data.val_size, "seed": cfg.seed, "metrics": metrics}
    (eval_dir / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    examples = cfg.get("figure_examples", 3)
    if examples:
        device = next(module.network.parameters()).device
        x_true, y_target, *observed = batch_rows(data.validation_set(device), slice(examples))
        with torch.no_grad():
            x = module.predict(y_target)
            figure = module.problem.figure(x, x_true, module.problem.simulate(x, *observed), y_target, *observed)
        primary = module.problem.primary_metric
        setting = f" with {', '.join(overrides)}" if overrides else ""
        plots.add_title(figure, f"{run_dir.name} at step {step}{setting}: val {primary} = "
                                f"{metrics.get(primary, float('nan')):.4g}")
        (eval_dir / "figures").mkdir(exist_ok=True)
        figure.savefig(eval_dir / "figures" / "examples.png", dpi=80)
        plt.close(figure)
    return {"metrics": metrics, "step": step, "checkpoint": checkpoint_path, "eval_dir": eval_dir,
            "overrides": list(overrides)}
