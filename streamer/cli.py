"""The ``conformer-streamer`` console script: one entry point, one sub-command per job."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# name -> (module under streamer.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "transcribe": ("transcribe", "transcribe audio files offline"),
    "attention-mask": ("attention_mask", "show which frames attend to which"),
    "synthesize": ("synthesize", "synthesize the training/evaluation speech corpus"),
    "train": ("train", "train a Wav2Vec2-Conformer CTC model"),
    "evaluate": ("evaluate", "WER/CER of a model on the evaluation sets"),
    "build-lm": ("build_lm", "build the word n-gram language model from the training text"),
    "serve": ("serve", "run the streaming recognition daemon"),
    "punctuate": (
        "punctuate",
        "punctuate and true-case lower-case transcripts (stdin lines -> stdout lines)",
    ),
    "train-punct": ("train_punct", "train the punctuation and casing model"),
    "average-weights": ("average_weights", "interpolate the weights of two exported models"),
}


# Default log level per command: the daemon logs its startup choices (decoder, listeners) and refusals.
DEFAULT_LOG_LEVEL = {"serve": logging.INFO}


def _global_options(dest_suffix: str = "") -> argparse.ArgumentParser:
    """The options every command takes, before or after its name (``serve -v`` as well as ``-v serve``)."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "-v",
        "--verbose",
        dest="verbose" + dest_suffix,
        action="count",
        default=0,
        help="more logging (repeatable)",
    )
    return options


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog="conformer-streamer", description=__doc__, parents=[_global_options()]
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub_parsers: dict[str, argparse.ArgumentParser] = {}
    # A sub-command parses into a fresh namespace that then overwrites the top level's values, so its copy
    # of the global options counts under another name and the two are added up in `main`.
    after = _global_options("_after")
    for name, (module_name, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text, parents=[after])
        sub_parser.set_defaults(_module=module_name)
        sub_parsers[name] = sub_parser
    # Arguments are added lazily (see main) so that running one command imports only its module.
    return parser, sub_parsers


def _load_command(module_name: str):
    return importlib.import_module(f"streamer.commands.{module_name}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, sub_parsers = build_parser()
    # Find the sub-command first, then let its module add its own arguments before the full parse.
    command = next((arg for arg in argv if arg in COMMANDS), None)
    if command is not None:
        _load_command(COMMANDS[command][0]).add_arguments(sub_parsers[command])
    args = parser.parse_args(argv)
    verbose = args.verbose + args.verbose_after
    level = max(logging.DEBUG, DEFAULT_LOG_LEVEL.get(args.command, logging.WARNING) - 10 * verbose)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    module = _load_command(args._module)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
