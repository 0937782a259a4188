"""The ``keel`` command.

Owns argument parsing, terminal output and exit codes; calls into the domain
packages and never the other way round. ``main.py`` only assembles the
command groups; each group lives in its own module and imports heavy
dependencies inside its commands so ``keel --help`` stays instant.
"""
