"""bot-bottle: run coding agents in isolated, ephemeral bottles and drive them from a forge."""

__version__ = "0.1.0"
