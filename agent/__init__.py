"""aftercall: after-call SMS for Asterisk."""

__version__ = "0.1.0"
