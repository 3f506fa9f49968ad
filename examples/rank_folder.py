"""Score every face image in a folder with a trained checkpoint and rank them, best first.

    python examples/rank_folder.py runs/student/best.pt photos/ --out ranked.csv --top 10

Folders are searched recursively; images of any resolution go through the checkpoint's own evaluation
transform. The CSV has the header line ``image,score``; the best ``--top`` images are also printed.
The same thing from the shell: ``kdfiqa predict CKPT photos/ --out ranked.csv --sort``.
"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from kdfiqa.inference import load_inference_model, predict_images, write_scores_csv


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a kdfiqa checkpoint (or a registered model name)")
    parser.add_argument("folder", nargs="+", help="image folder(s) or files")
    parser.add_argument("--out", default="ranked.csv", help="output CSV (default: %(default)s)")
    parser.add_argument("--top", type=int, default=10, help="how many of the best to print")
    parser.add_argument("--skip-bad", action="store_true", help="skip unreadable images instead of failing")
    args = parser.parse_args(argv)

    loaded = load_inference_model(args.checkpoint)
    predictions = predict_images(loaded, args.folder, batch_size=16, skip_bad=args.skip_bad)
    write_scores_csv(args.out, predictions, sort=True)

    table = Table(title=f"best {min(args.top, len(predictions.names))} of {len(predictions.names)} images")
    table.add_column("rank", justify="right")
    table.add_column("image")
    table.add_column("score", justify="right")
    for rank, (name, score) in enumerate(predictions.ranked()[: args.top], start=1):
        table.add_row(str(rank), name, f"{score:.4f}")
    console = Console()
    console.print(table)
    console.print(f"all scores, best first: {args.out}")


if __name__ == "__main__":
    main()
