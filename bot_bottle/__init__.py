"""bot-bottle: run coding agents in isolated, ephemeral bottles and drive them from a forge."""

# the version's one home: pyproject.toml reads it (tool.setuptools.dynamic), `--version` prints it
__version__ = "0.1.0"
