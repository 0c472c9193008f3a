"""aigc-code: self-hosted code completion."""

__version__ = "0.1.0"
