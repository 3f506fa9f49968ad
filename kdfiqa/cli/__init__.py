"""The ``kdfiqa`` command line: one module per sub-command, assembled by :mod:`kdfiqa.cli.main`."""
