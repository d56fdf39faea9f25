"""The ``eventful`` commands, one module per command group (as ``celery/bin``); each
module's ``COMMANDS`` are what ``shared.ops.cli`` adds to the CLI."""
