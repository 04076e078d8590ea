"""edgedistill: distil the reasoning of large language models into small ones and run them at the edge.

The kernel (this package) holds what more than one stage uses: config, records, the run directory, the model
resolver, generation with the calculator, answer checkers and the CLI. Stages (teacher, student, export, serve,
evals) import the kernel and never each other; they meet through artifacts on disk.
"""
__version__ = "0.1.0"


class UserError(Exception):
    """A problem the user can fix (bad path, malformed file, unknown key). The CLI prints it and exits 2."""
