"""Deprecated: the HTTP API moved to :mod:`vital_callbacks.server`; this name keeps old imports working."""

import warnings

from vital_callbacks.server import *  # noqa: F403
from vital_callbacks.server import __all__ as __all__

warnings.warn("vital_callbacks.api is deprecated; import from vital_callbacks.server", DeprecationWarning,
              stacklevel=2)
