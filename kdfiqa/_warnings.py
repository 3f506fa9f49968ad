"""Import fvcore without its import-time deprecation noise.

fvcore decorates a helper with ``torch.jit.script`` at import time, which recent torch releases
announce with a ``FutureWarning``/``DeprecationWarning``. The filter below is scoped to that one
import, so the user's own warning filters are left untouched.
"""

from __future__ import annotations

import warnings


def import_fvcore_nn():
    """Return ``fvcore.nn`` imported with its import-time warnings silenced (only those)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        import fvcore.nn as fvnn
    return fvnn
