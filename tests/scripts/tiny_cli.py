"""``kdfiqa`` with the tiny test model registered, for torchrun and subprocess tests.

With ``KDFIQA_TEST_SLEEP=S`` every forward of the tiny model first sleeps S seconds (a slow
teacher, so that a test can kill a labelling run part-way)."""

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tiny_fiqa  # noqa: E402

from kdfiqa.cli.main import main  # noqa: E402

if os.environ.get("KDFIQA_TEST_SLEEP"):
    pause, logits = float(os.environ["KDFIQA_TEST_SLEEP"]), tiny_fiqa.TinyFIQA.forward_logits

    def slow_logits(self, x):
        time.sleep(pause)
        return logits(self, x)

    tiny_fiqa.TinyFIQA.forward_logits = slow_logits

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
