"""One eager-inference timing in a fresh process, for the ``inference`` benchmark's allocator check.

usage: python -m benchmarks.allocator_probe MODEL BATCH SIZE REPEATS

Prints one JSON object: the median seconds of ``REPEATS`` eager passes (after one warm-up pass) and
the minor page faults per pass. glibc's allocator reads its settings (``MALLOC_MMAP_MAX_``,
``MALLOC_TRIM_THRESHOLD_``) from the environment when the process starts, which is why each setting
is measured in a process of its own.
"""

from __future__ import annotations

import json
import resource
import sys

import torch

from kdfiqa.models import create_model

from .common import median_seconds


def main(argv: list[str]) -> None:
    name, batch, size, repeats = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    torch.manual_seed(0)
    model = create_model(name, pretrained=False).eval()
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        model(x)  # warm-up, outside the page-fault count
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        seconds = median_seconds(lambda: model(x), repeats=repeats, warmup=0)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    print(json.dumps({"seconds": seconds, "faults_per_pass": faults / repeats}))


if __name__ == "__main__":
    main(sys.argv[1:])
