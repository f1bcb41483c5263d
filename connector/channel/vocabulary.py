"""The channel protocol's command names (docs/protocol.md §3.1), defined once.

The verifier refuses any other name; the command metrics label any other name ``other``.
"""

from __future__ import annotations

COMMAND_NAMES = ("authenticate_user", "search_users", "list_groups", "change_password", "ping")
