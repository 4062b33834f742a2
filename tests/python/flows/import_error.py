"""A module that fails to import."""

import fstore_no_such_module  # noqa: F401
