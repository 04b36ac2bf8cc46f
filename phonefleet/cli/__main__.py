"""``python -m phonefleet.cli``: the same as the ``phonefleet`` command."""

from phonefleet.cli import main

main()
