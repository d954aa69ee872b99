"""Regular expressions from users (configs, globs), compiled by RE2: linear time on any text, so no pattern can
stall a run by backtracking."""

from __future__ import annotations

from typing import Any

import re2

RE2_LIMITS = "RE2 syntax: no backreferences or lookaround"


def compile_re2(pattern: str) -> Any:
    """``pattern`` compiled by RE2; a ValueError with RE2's reason when it does not compile."""
    options = re2.Options()
    options.log_errors = False
    try:
        return re2.compile(pattern, options)
    except re2.error as e:
        reason = e.args[0] if e.args else e
        raise ValueError(reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)) from None
