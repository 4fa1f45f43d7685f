"""The one base class of errors a user can fix: bad files, folders, settings, options or requests.

The CLI prints these as one `error:` line and exits with code 2. Anything else that escapes a verb
is a bug in the package and keeps its traceback, so internal code must never raise UserInputError
(nor any subclass) for its own mistakes. It derives from ValueError so that callers catching
ValueError keep working.
"""

from __future__ import annotations


class UserInputError(ValueError):
    """Input from the user (a path, a file's content, a setting, an option) that cannot be used."""
