"""Test-session settings: property tests replay fixed examples unless asked to explore.

By default hypothesis derandomizes (the same examples every run), so the test command's verdict
never hinges on a rare draw. ``KDFIQA_HYPOTHESIS_PROFILE=explore python -m pytest`` draws fresh
random examples, to hunt for new failures.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("fixed", derandomize=True, print_blob=True)
settings.register_profile("explore", print_blob=True)
settings.load_profile(os.environ.get("KDFIQA_HYPOTHESIS_PROFILE", "fixed"))
