"""gatekeeper: a compliance gate for outbound telephone calls."""

__version__ = "0.1.0"
