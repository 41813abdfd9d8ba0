"""The `ensemble` Hydra launcher (hydra/launcher=ensemble): jobs that differ only in vectorisable values train
together as ensembles, one process each; the rest go to an inner launcher. Found by Hydra through the
hydra_plugins namespace package, like any Hydra plugin."""
