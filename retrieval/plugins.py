"""Named plug-ins: the built-ins register in code, outside packages through an entry point group.

The mechanism behind both registries (LLM backends in `assistant.llm.registry`, embedders in
`retrieval.embedders`). It lives here, next to nothing but `core.errors`, because `retrieval/`
may not import the rest of `assistant/`; it moves with the errors when those move.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
from dataclasses import replace
from typing import Callable, Generic, TypeVar

from core.errors import ConfigError

log = logging.getLogger(__name__)

Spec = TypeVar("Spec")  # a frozen dataclass with at least `name` and `factory`


class Registry(Generic[Spec]):
    """Specs by name. An outside package adds one with an entry point in `group`:

        [project.entry-points."recassist.embedders"]
        mine = "my_package.module:create"      # create(config) -> Embedder, or a spec object

    Entry points are listed when a name is asked for and imported only when that one is used.
    """

    def __init__(self, kind: str, group: str, setting: str, spec_type: type):
        self.kind = kind  # "LLM backend", shown in errors
        self.group = group
        self.setting = setting  # the environment variable that names one, shown in errors
        self.spec_type = spec_type
        self._specs: dict[str, Spec] = {}

    def register(self, spec: Spec) -> Spec:
        """Add or replace a spec (the built-ins call this as outside entry points do)."""
        if not spec.name or not spec.name.replace("-", "_").isidentifier():
            raise ConfigError(f"{self.kind} name {spec.name!r} must be letters, digits, _ or -")
        self._specs[spec.name] = spec
        return spec

    def unregister(self, name: str) -> None:
        self._specs.pop(name, None)

    def names(self) -> list[str]:
        """Every name that can be used: registered ones and installed entry points, sorted."""
        return sorted(set(self._specs) | set(self._entry_points()))

    def check(self, name: str) -> str:
        """`name` when it can be used, else a ValueError listing the known names and how to add one."""
        if name in self._specs or name in self._entry_points():
            return name
        raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}. {self.how_to_add()}")

    def how_to_add(self) -> str:
        return (f"An installed package adds one with an entry point in the group {self.group!r} "
                f"(see README, 'Plug-ins')")

    def get(self, name: str) -> Spec:
        """The spec for `name`, importing its entry point the first time it is asked for."""
        if name in self._specs:
            return self._specs[name]
        point = self._entry_points().get(name)
        if point is None:
            raise ConfigError(f"{self.setting}={name!r} is unknown; known: {', '.join(self.names())}. {self.how_to_add()}")
        try:
            loaded = point.load()
        except Exception as exc:
            where = f" (package {point.dist.name})" if getattr(point, "dist", None) else ""
            raise ConfigError(
                f"the {self.kind} {name!r}{where} could not be loaded from its entry point {point.value!r}: "
                f"{type(exc).__name__}: {exc}; reinstall or fix that package"
            ) from None
        if isinstance(loaded, self.spec_type):
            spec = replace(loaded, name=name)  # the entry point's name is the one users type
        elif callable(loaded):
            spec = self.spec_type(name=name, factory=loaded)
        else:
            raise ConfigError(
                f"the entry point {point.value!r} for the {self.kind} {name!r} is a {type(loaded).__name__}; "
                f"it must be a factory function or a {self.spec_type.__name__}"
            )
        return self.register(spec)

    def factory(self, name: str) -> Callable:
        """The spec's factory, imported now when it was given as "module:attribute"."""
        spec = self.get(name)
        if callable(spec.factory):
            return spec.factory
        return import_target(spec.factory, f"the {self.kind} {name!r}", getattr(spec, "install", ""))

    def _entry_points(self) -> dict:
        points: dict = {}
        for point in importlib.metadata.entry_points(group=self.group):
            if point.name in self._specs and point.name not in points:
                log.debug("entry point %s=%s ignored: %r is already registered", point.name, point.value, point.name)
                continue
            points.setdefault(point.name, point)
        return points


def import_target(target: str, what: str, install: str = "") -> Callable:
    """"package.module:attribute" imported; a missing module is a ConfigError that says which and how to fix it."""
    module_name, _, attribute = target.partition(":")
    try:
        obj = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if module_name == missing or module_name.startswith(missing + "."):
            fix = install or "install the package that provides it"
            raise ConfigError(f"{what} lives in the module {module_name}, which is not installed here; {fix}") from None
        fix = install or f"pip install {missing.split('.')[0].replace('_', '-')}"
        raise ConfigError(f"{what} needs the Python package {missing!r}, which is not installed; {fix}") from None
    for part in filter(None, attribute.split(".")):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{what}: {module_name} has no {attribute!r}") from None
    return obj
