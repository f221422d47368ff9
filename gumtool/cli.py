"""The `gumtool` command line: a registry of commands, one module each, parsed with argparse.

Imports the command modules (each when its command runs). `main(argv)` returns the exit status (the only place errors become
exit codes): 0 on success; 1 for an error (the message on stderr) and for `gumtool` alone or an
unknown command (the usage on stderr, as the original); 2 for bad flags (argparse); 130 when
interrupted by Ctrl-C or SIGTERM (the inputs are untouched and no output was written).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
from types import ModuleType

from gumshoe.errors import GumshoeError

# command -> its module, imported when the command runs (a command does not pay for the
# others' imports at start-up: ~0.15 s of CPU, e.g. in a timed `gumtool import`)
COMMANDS: dict[str, str] = {
    "balance": "balance",
    "clean": "clean",
    "import": "import_cmd",
    "merge": "merge",
    "migrate": "migrate",
    "readdims": "readdims",
    "reindex": "reindex",
    "stats": "stats",
}


def command(name: str) -> ModuleType:
    return importlib.import_module(f"{__package__}.{COMMANDS[name]}")


def usage() -> str:
    width = max(map(len, COMMANDS))
    mods = {name: command(name) for name in COMMANDS}
    lines = ["gumtool is part of gumshoe. It has several subcommands:"]
    lines += [f"  {name:<{width}}  {mod.HELP}" for name, mod in mods.items()]
    lines += ["Usage:", "  $ gumtool COMMAND [ARGS]", "Examples:"]
    lines += [f"  $ {mod.EXAMPLE}" for mod in mods.values()]
    lines.append("Run 'gumtool COMMAND -h' to see how to use a particular command")
    return "\n".join(lines) + "\n"


def parser_for(name: str) -> argparse.ArgumentParser:
    mod = command(name)
    p = argparse.ArgumentParser(prog=f"gumtool {name}", description=mod.DESCRIPTION,
                                epilog=f"example: {mod.EXAMPLE}",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    mod.add_arguments(p)
    return p


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args:
        sys.stderr.write(usage())
        return 1
    name = args[0]
    if name in ("-h", "--help", "help"):
        sys.stdout.write(usage())
        return 0
    if name not in COMMANDS:
        sys.stderr.write(f'Error: no such command "{name}"\n\n' + usage())
        return 1
    try:
        ns = parser_for(name).parse_args(args[1:])
    except SystemExit as e:  # -h (0) or a bad flag (2, message printed by argparse)
        return e.code if isinstance(e.code, int) else 2
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                            format=f"gumtool {name}: %(levelname)s: %(message)s")
    main_thread = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None  # like Ctrl-C
    try:
        return int(command(name).run(ns))
    except GumshoeError as e:
        print(f"gumtool {name}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"gumtool {name}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ngumtool {name}: interrupted; the inputs are untouched and no new database "
              "was written", file=sys.stderr)
        return 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, old)


if __name__ == "__main__":
    sys.exit(main())
