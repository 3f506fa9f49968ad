"""``kdfiqa recipes``: the packaged recipes, and the settings of one of them."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  kdfiqa recipes
  kdfiqa recipes 2077agent
  kdfiqa recipes 2077agent --resolved distill
  kdfiqa train --recipe 2077agent --root data/train --csv data/train.csv --out runs/teacher
  kdfiqa distill --recipe 2077agent --root data/train --csv data/train.csv \\
      --teacher runs/teacher/best.pt --out runs/student

A recipe reproduces a published setup; flags and --set SECTION.KEY=VALUE override any of its values.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..config import COMMANDS

    p = subparsers.add_parser(
        "recipes", help="list the seed's recipes, or show one",
        description="Without NAME, list the packaged recipes with a one-line description. With NAME, "
                    "print the recipe file, or with --resolved the full settings a command would use.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", help="a recipe to show")
    p.add_argument("--resolved", choices=COMMANDS, metavar="COMMAND",
                   help="print every setting `kdfiqa COMMAND --recipe NAME` starts from (train or distill)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..console import make_console
    from rich.table import Table

    from ..config import list_recipes, load_recipe, recipe_path, resolve_config
    from ..errors import ConfigError

    if args.name is None:
        if args.resolved:
            raise ConfigError("--resolved needs a recipe NAME")
        table = Table(title="kdfiqa recipes (use with --recipe NAME)")
        table.add_column("name", no_wrap=True)
        table.add_column("description")
        for name, description in list_recipes():
            table.add_row(name, description)
        make_console().print(table)
        return 0
    if args.resolved:
        config = resolve_config(args.resolved, load_recipe(args.name, args.resolved))
        config.validate()
        print(config.to_yaml(), end="")
    else:
        print(recipe_path(args.name).read_text(encoding="utf-8"), end="")
    return 0
