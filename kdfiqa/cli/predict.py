"""``kdfiqa predict``: score image files and folders with a trained model, write ``image,score`` (or the
challenge's submission format)."""

from __future__ import annotations

import argparse

from ..errors import ConfigError
from ..inference import DEVICES, SCORE_FORMATS
from .config_flags import add_threads_flag, at_least, image_size_arg

EXAMPLES = """examples:
  kdfiqa predict runs/student/best.pt photos/ --out scores.csv
  kdfiqa predict runs/student/best.pt photos/ --out ranked.csv --sort
  kdfiqa predict runs/student/best.pt a.jpg b.png more/ --out scores.csv --skip-bad
  kdfiqa predict runs/ders/best.pt photos/ --out scores.csv --native
  kdfiqa predict runs/student/best.pt test/ --out submission.csv --format challenge

Output: a CSV with the header line "image,score", then one row per image: its path (as given, or
found inside a given folder) and its predicted quality score in (0, 1), higher is better. With
--format challenge: the challenge's submission, no header line and one "image_name,score" row per
image of the one test folder given, its name relative to that folder.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``predict`` sub-command (imports nothing heavy)."""
    p = subparsers.add_parser(
        "predict", help="score images and folders, write an image,score CSV",
        description="Score image files and folders (searched recursively for .png .jpg .jpeg .bmp "
                    ".webp .tif .tiff) of any resolution with a checkpoint's model and the evaluation "
                    "transform of its deploy config (the size and normalisation it was trained for). "
                    "Unreadable images stop the run with one message listing them all, unless --skip-bad.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", metavar="CKPT", help="checkpoint (*.pt), or registered name/timm:NAME/file.py:factory")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files and/or folders")
    p.add_argument("--out", required=True, metavar="CSV", help="output CSV (header line: image,score)")
    p.add_argument("--format", choices=SCORE_FORMATS, default="table",
                   help="table: header line image,score and paths as found (default); challenge: no header, "
                        "image_name,score with names relative to the one test folder given")
    p.add_argument("--sort", action="store_true", help="order rows by score, highest first")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable images (counted, logged)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    add_inference_flags(p)
    p.set_defaults(func=run)


def add_inference_flags(p: argparse.ArgumentParser) -> None:
    """Flags shared by ``predict`` and ``evaluate``: transform overrides, batch size, device, model form."""
    p.add_argument("--input", type=image_size_arg, metavar="SIZE",
                   help="resize to this size instead of the checkpoint's (e.g. 224 or 224x336)")
    p.add_argument("--native", action="store_true", help="no resize: each image at its own resolution")
    p.add_argument("--multi-crop", type=int, metavar="N", help="average the scores of N random crops")
    p.add_argument("--batch-size", type=at_least(1), default=32, help="images per batch (default: %(default)s)")
    p.add_argument("--workers", type=at_least(0), default=0, help="data-loading worker processes")
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="auto: CUDA when available (under torchrun, each rank's own GPU)")
    p.add_argument("--no-fuse", action="store_true",
                   help="score with the training form; by default the inference form (batch norms folded, "
                        "in-place activations, EMO blocks with fewer copies, channels-last weights) is used "
                        "once its outputs match it to 1e-5")
    add_threads_flag(p)
    add_speed_flags(p)


def add_speed_flags(p: argparse.ArgumentParser) -> None:
    """``--amp`` and ``--channels-last``: CUDA inference settings; on the CPU they change nothing
    (a note says so), so one command line serves both."""
    p.add_argument("--amp", choices=("none", "bf16"), default="none",
                   help="on CUDA, score under bf16 autocast (on the CPU: full float32, with a note)")
    p.add_argument("--channels-last", action="store_true",
                   help="on CUDA, feed images in channels-last memory format (on the CPU: ignored, with a note)")


def run(args: argparse.Namespace) -> int:
    """Score the images and write the CSV (under ``torchrun`` every rank scores its share and rank 0
    writes what one process writes)."""
    from ..console import make_console
    from ..engine.distributed import init_distributed, rank_zero_writer_lock, shutdown_distributed
    from ..inference import load_inference_model, predict_images, speed_note, write_scores_csv
    from ..outputs import check_output_file

    ctx = init_distributed(args.device)  # joins the torchrun group when there is one
    try:
        with rank_zero_writer_lock(args.out, ctx):  # rank 0 alone writes --out
            check_output_file(args.out, inputs=[args.target, *args.paths], overwrite=args.overwrite)
            folder = challenge_folder(args.paths) if args.format == "challenge" else None
            loaded = load_inference_model(args.target, input_size=args.input, native=args.native,
                                          multi_crop=args.multi_crop, fuse=not args.no_fuse)
            scores = predict_images(loaded, args.paths, batch_size=args.batch_size, device=args.device,
                                    skip_bad=args.skip_bad, num_workers=args.workers, ctx=ctx, amp=args.amp,
                                    channels_last=args.channels_last)
            if ctx.is_main:  # refuses one written meanwhile
                path = write_scores_csv(args.out, scores, sort=args.sort, overwrite=args.overwrite,
                                        format=args.format, folder=folder)
    finally:
        shutdown_distributed()
    if not ctx.is_main:
        return 0
    console = make_console(stderr=True)
    note = speed_note(ctx.device, args.amp, args.channels_last)
    if note:
        console.print(f"note: {note}", markup=False, highlight=False)
    console.print(f"scored {len(scores.names)} images -> {path}", markup=False, highlight=False)
    if scores.skipped:
        console.print(f"skipped {scores.skipped} unreadable images", style="yellow",
                      markup=False, highlight=False)
    return 0


def challenge_folder(paths: list[str]) -> str:
    """The one test folder ``--format challenge`` names its rows relative to (a single PATH that is a
    folder; anything else is refused before the model is loaded)."""
    from pathlib import Path

    if len(paths) != 1 or not Path(paths[0]).is_dir():
        raise ConfigError(f"--format challenge: give the one test folder whose images the submission scores "
                          f"(got {' '.join(paths)}); its rows name the images relative to it")
    return paths[0]
