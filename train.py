"""Train a network on an inverse physics problem: `python train.py problem=heat optimizer=sip` (in the
repository; installed, the same command is `sip-train problem=heat optimizer=sip`).

Hydra composes conf/config.yaml with the overrides; `--multirun` (-m) sweeps them. The exit status says
how the run ended (see sip_train/cli.py and sip_train/exit_codes.py).
"""
from sip_train.cli import train_command

if __name__ == "__main__":
    train_command()
