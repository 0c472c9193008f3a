"""Library-side completion settings (being moved here from server/settings.py)."""

from aigc_code.server.settings import Settings  # noqa: F401
