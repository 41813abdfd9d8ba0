"""Generic inverse solvers for SIP: the x-space update dx computed from simulate() and y_loss() alone."""
