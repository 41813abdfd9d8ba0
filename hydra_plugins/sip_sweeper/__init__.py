"""The `sip` Hydra sweeper (hydra/sweeper=sip, the default in conf/config.yaml): named sweeps that
skip finished jobs, and Hydra's basic cartesian sweeps. Found by Hydra through the hydra_plugins
namespace package, like any Hydra plugin."""
