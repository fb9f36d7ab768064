"""Sub-commands of the ``conformer-streamer`` console script.

Each module defines ``add_arguments(parser)`` and ``run(args) -> int``; ``streamer.cli`` imports a
module only when its sub-command is chosen, so ``transcribe`` never pays for the server's imports.
"""
