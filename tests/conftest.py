"""Test-session settings: property tests replay fixed examples unless asked to explore.

By default hypothesis derandomizes (the same examples every run), so the test command's verdict
never hinges on a rare draw. ``KDFIQA_HYPOTHESIS_PROFILE=explore python -m pytest`` draws fresh
random examples, to hunt for new failures.
"""

from __future__ import annotations

import os
import tempfile

from hypothesis import settings

# the decode-check cache of this test session (and of the commands it starts) stays out of ~/.cache
os.environ.setdefault("KDFIQA_CACHE_DIR", tempfile.mkdtemp(prefix="kdfiqa-test-cache-"))

settings.register_profile("fixed", derandomize=True, print_blob=True)
settings.register_profile("explore", print_blob=True)
settings.load_profile(os.environ.get("KDFIQA_HYPOTHESIS_PROFILE", "fixed"))
