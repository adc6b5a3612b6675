"""``python -m oraculum.cli``: the ``oraculum`` command, as the console script runs it."""

from oraculum.cli.main import main

if __name__ == "__main__":  # pragma: no cover
    main()
