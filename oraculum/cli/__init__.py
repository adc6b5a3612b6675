"""The ``oraculum`` command line: the composition root.

Every Kubernetes Job runs one of its verbs, and so can a person. It is the one place allowed to
import the operator, the API and the dashboard, and it does so lazily, inside the verbs that
start them.
"""

from oraculum.cli.main import main

__all__ = ["main"]
