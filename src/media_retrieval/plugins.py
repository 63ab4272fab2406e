"""Plug-ins: the user's own modules, imported before anything is built, so what they register
(``@register_ranker``, ``@register_metric``, ``@register_backbone``, ``@register_model``) is
used by train, eval, index, search and serve like the package's own.

Plug-ins are named only by the user: ``plugins: [my_package.my_rankers]`` in a config, or
``--plugin my_package.my_rankers`` on the command line. A checkpoint or an index folder never
names one (what they name is looked up in the registries, never imported). Why not entry points
(timm's way): a module named in the config is visible in the run's saved config, so a run says
which plug-ins made it, and it needs no installed package (mmaction2's ``custom_imports``).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable

from media_retrieval.errors import ConfigError

_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def import_plugins(names: Iterable[object]) -> list[str]:
    """Import each named module once (in order); one line for a name that is not a module path,
    a module that is not there, or one that fails while importing."""
    done = []
    for name in names:
        if not isinstance(name, str) or not _MODULE.fullmatch(name):
            raise ConfigError(
                f"plugins: {str(name)[:80]!r} is not a module path (e.g. my_package.my_rankers)"
            )
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
                raise ConfigError(
                    f"plugins: no module {name!r} (install your package, or add its folder to "
                    "PYTHONPATH)"
                ) from None
            raise ConfigError(
                f"plugins: {name} needs {exc.name!r}, which is not installed"
            ) from exc
        except Exception as exc:  # noqa: BLE001 - the user's module may fail in any way: one line, with its cause
            first = (str(exc).splitlines() or [""])[0][:160]
            raise ConfigError(
                f"plugins: importing {name} failed ({type(exc).__name__}: {first})"
            ) from exc
        done.append(name)
    return done


def plugins_from_argv(argv: list[str]) -> list[str]:
    """``argv`` with each ``--plugin NAME`` / ``--plugin=NAME`` turned into the Hydra override
    ``plugins=[...]`` (merged with one the user wrote), so the run's saved overrides, and the
    processes a multi-GPU run starts from the same command line, name them too."""
    names, rest, i = [], [], 0
    while i < len(argv):
        a = argv[i]
        if a == "--plugin":
            if i + 1 >= len(argv):
                raise ConfigError(
                    "--plugin needs a module path (e.g. --plugin my_package.my_rankers)"
                )
            names.append(argv[i + 1])
            i += 2
            continue
        if a.startswith("--plugin="):
            names.append(a.split("=", 1)[1])
        else:
            rest.append(a)
        i += 1
    if not names:
        return argv
    given = next((j for j, a in enumerate(rest) if a.startswith("plugins=")), None)
    if given is not None:
        inner = rest[given].split("=", 1)[1].strip()
        inner = inner[1:-1] if inner.startswith("[") and inner.endswith("]") else inner
        names = [n.strip() for n in inner.split(",") if n.strip()] + names
        del rest[given]
    return [*rest, f"plugins=[{','.join(names)}]"]
