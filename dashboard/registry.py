"""The dashboard's view registry: a view is a drawing function registered with the ``view`` decorator, one module each.

A view module in ``dashboard/views/`` registers its function, and the app finds it there: adding a view is adding one
file, with no list to edit and no branch in ``dashboard/app.py``::

    # dashboard/views/utility.py
    from dashboard.registry import view

    @view("utility", title="Utility", scope="run", order=45)
    def view_utility(index, row): ...

``scope="run"`` is a view of one run: the app shows the run picker and calls ``draw(index, row)`` with the selected
run's row of the index; ``scope="runs"`` is a view of the whole folder, called as ``draw(index)``. ``order`` places
the view in the sidebar (the built-ins are 10, 20, ... 80; a view without one goes after them, by name). The name is
what ``?view=NAME`` in the URL opens.

Views from other packages are found through the entry-point group ``cascade_poison.views`` (each entry names a
module whose import runs its decorators)::

    [project.entry-points."cascade_poison.views"]
    my_views = "my_views"

It is a group of its own, not the plugins' ``cascade_poison.plugins``: the dashboard reads run directories and never
imports the plugins (which bring torch and transformers), and a run never imports Streamlit (an optional dependency).
The registry imports nothing from Streamlit: a view module does, to draw.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
import re
import threading
from dataclasses import dataclass
from typing import Any, Callable

from poison.ground.core.errors import PluginError
from poison.ground.core.registry import first_paragraph, import_entry_points

ENTRY_POINT_GROUP = "cascade_poison.views"
BUILTIN_PACKAGE = "dashboard.views"
SCOPES = {"run": "a view of one run: draw(index, row)", "runs": "a view of the runs folder: draw(index)"}
DEFAULT_ORDER = 1000
NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


@dataclass(frozen=True)
class ViewInfo:
    name: str
    title: str
    scope: str
    order: int
    func: Callable[..., Any]
    module: str
    description: str

    def draw(self, index: dict[str, Any], row: Any = None) -> Any:
        """Draw the view: ``func(index, row)`` for a view of one run, ``func(index)`` for a view of the folder."""
        return self.func(index, row) if self.scope == "run" else self.func(index)


_views: dict[str, ViewInfo] = {}
_lock = threading.RLock()
_loaded = False
_load_errors: list[str] = []


def view(name: str, title: str | None = None, scope: str = "run", order: int = DEFAULT_ORDER,
         description: str | None = None):
    """Register a drawing function as the view ``name`` (see the module docstring)."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise PluginError(f"view name {name!r}: lower-case letters, digits, '_' and '-' (it goes in the URL)")
    if scope not in SCOPES:
        raise PluginError(f"view {name!r}: scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    if isinstance(order, bool) or not isinstance(order, int):
        raise PluginError(f"view {name!r}: order must be an integer, not {order!r}")

    def deco(func: Callable[..., Any]):
        info = ViewInfo(name, title or name.replace("_", " ").capitalize(), scope, order, func,
                        getattr(func, "__module__", "?"), description or first_paragraph(func.__doc__))
        with _lock:
            old = _views.get(name)
            if old is not None and old.module != info.module:
                raise PluginError(f"view {name!r} is registered twice: by {old.module} and by {info.module}")
            _views[name] = info
        func.view_info = info
        return func

    return deco


def load_views() -> None:
    """Import every module of ``dashboard/views/`` and every module of the ``cascade_poison.views`` entry points
    (once). A view package that fails to import is recorded (``load_errors``), not raised: the other views still
    draw. A built-in that fails to import is a bug, and raises."""
    global _loaded
    with _lock:
        if _loaded:
            return
        pkg = importlib.import_module(BUILTIN_PACKAGE)
        for mod in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
            importlib.import_module(f"{BUILTIN_PACKAGE}.{mod.name}")
        _load_errors.extend(import_entry_points(ENTRY_POINT_GROUP))
        _loaded = True


def reset_for_tests() -> None:
    """Forget that the views were loaded, so a test can put a view package on the path and load again."""
    global _loaded
    with _lock:
        _loaded = False
        _load_errors.clear()


def load_errors() -> list[str]:
    return list(_load_errors)


def views() -> dict[str, ViewInfo]:
    """Every registered view by name, in sidebar order (``order``, then name)."""
    load_views()
    with _lock:
        return {v.name: v for v in sorted(_views.values(), key=lambda v: (v.order, v.name))}


def names() -> list[str]:
    return list(views())


def get(name: str) -> ViewInfo:
    found = views().get(name)
    if found is None:
        close = closest(name)
        raise PluginError(f"unknown view {name!r}" + (f" (did you mean {close!r}?)" if close else "")
                          + f"; registered: {', '.join(names()) or 'none'}")
    return found


def closest(name: str) -> str | None:
    """The registered view name closest to ``name`` (a mistyped ``?view=``), if any is close."""
    close = difflib.get_close_matches(name, names(), n=1)
    return close[0] if close else None
