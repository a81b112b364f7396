"""The ``shadows`` command line."""

from __future__ import annotations

import sys

import typer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shadows.cli import clear as _clear  # noqa: F401
from shadows.cli import config as _config  # noqa: F401
from shadows.cli import dashboard as _dashboard  # noqa: F401
from shadows.cli import failed as _failed  # noqa: F401
from shadows.cli import init as _init  # noqa: F401
from shadows.cli import shards as _shards  # noqa: F401
from shadows.cli import snapshot as _snapshot  # noqa: F401
from shadows.cli import strikes as _strikes  # noqa: F401
from shadows.cli import tasks as _tasks  # noqa: F401
from shadows.cli import watch as _watch  # noqa: F401
from shadows.cli import worker as _worker  # noqa: F401
from shadows.cli import workers as _workers  # noqa: F401
from shadows.cli.app import app as app  # each command module registers itself on it
from shadows.cli.errors import CLIError
from shadows.settings import ConfigError, activate

try:  # typer releases that bundle their own click
    from typer import TyperException as _UsageError  # type: ignore[attr-defined,unused-ignore]
except ImportError:  # pragma: no cover - older typer on top of click
    from click import ClickException as _UsageError  # type: ignore[assignment,unused-ignore]


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning user errors into one line and a non-zero exit."""
    arguments = sys.argv[1:] if argv is None else argv
    try:
        result = app(args=arguments or ["--help"], standalone_mode=False, prog_name="shadows")
    except typer.Abort:
        print("Aborted.", file=sys.stderr)
        raise SystemExit(130) from None
    except _UsageError as error:
        print(f"Error: {error.format_message()}", file=sys.stderr)
        raise SystemExit(error.exit_code) from None
    except ConfigError as error:  # every problem at once, and no traceback
        print(f"Error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except CLIError as error:
        print(f"Error: {error}", file=sys.stderr)
        raise SystemExit(error.status) from None
    except (RedisConnectionError, RedisTimeoutError, OSError) as error:
        print(f"Error: cannot reach Redis: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    except RedisError as error:  # refused by the server: permissions, wrong type, ...
        print(f"Error: Redis refused: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    finally:
        activate(None)  # a command's settings end with it (main may be called in-process)
    raise SystemExit(result if isinstance(result, int) else 0)
