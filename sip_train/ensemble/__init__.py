"""Ensembles: many runs of one problem and rule trained together in one process, each still a run of its own.

Members differ only in vectorisable values (seed, the optimizer's scalar hyper-parameters, and the scalar
values a rule or a problem declares in its `ensemble_parameters`, e.g. SIP's eta or sine's xi). Their networks are stacked and evaluated
by `torch.func.vmap`, their examples folded into one batch for the physics and the inverse solvers, and
each member keeps its own data stream, optimizer state, run directory, checkpoints and summary.
"""
