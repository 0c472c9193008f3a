"""`python -m aigc_code.server serve ...` (same as `aigc-code serve ...`)."""

from aigc_code.server.cli import main

main()
