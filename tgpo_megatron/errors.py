"""Errors that mean "your input is wrong" (a config, a model directory, a checkpoint, a layout).

Entry points turn them into one line on stderr and exit code 2, instead of a traceback.
"""
from __future__ import annotations

import functools
import sys
from typing import Callable


class UserError(Exception):
    """Bad input from the user; the message names the field, file or tensor."""


def exit_on_user_error(main: Callable[..., int]) -> Callable[..., int]:
    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except (UserError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            return 2

    return wrapper
