"""One error root (relay/errors.py): every exception class defined in relay/, service/ and
workers/ descends from RelayError and carries an HTTP status or a delivery outcome."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import pkgutil
from types import ModuleType

import pytest

import relay
import service
import workers
from relay.errors import ProblemError, RelayError

# Alembic's env.py runs a migration when imported (it needs Alembic's context); it defines no
# class at all (test_skipped_modules_define_no_class below reads its source).
SKIPPED = frozenset({"relay.ledger.migrations.env"})


def _modules() -> list[ModuleType]:
    modules = []
    for package in (relay, service, workers):
        modules.append(package)
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name in SKIPPED:
                continue
            modules.append(importlib.import_module(info.name))
    return modules


def _exception_classes() -> list[type[BaseException]]:
    found = []
    for module in _modules():
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and issubclass(cls, BaseException):
                found.append(cls)
    return found


EXCEPTIONS = _exception_classes()


def test_the_walk_finds_the_known_trees() -> None:
    names = {cls.__qualname__ for cls in EXCEPTIONS}
    # One of each former root, so that a broken walk cannot pass the tests below vacuously.
    assert {
        "RelayError",
        "ConfigError",
        "ReplayRefused",
        "SignatureError",
        "FieldsError",
        "ThrottledError",
        "DeliveryError",
        "BatchPartialError",
        "UnknownDestinationError",
        "LedgerUnwritableError",
    } <= names


@pytest.mark.parametrize("cls", EXCEPTIONS, ids=lambda cls: f"{cls.__module__}.{cls.__name__}")
def test_every_exception_descends_from_the_root_and_says_what_it_means(
    cls: type[BaseException],
) -> None:
    assert issubclass(cls, RelayError)
    if cls is RelayError:
        return
    assert cls.http_status is not None or cls.outcome is not None
    if issubclass(cls, ProblemError):
        assert 400 <= (cls.http_status or 0) <= 599
        assert cls.slug and cls.title


def test_skipped_modules_define_no_class() -> None:
    for name in SKIPPED:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None
        with open(spec.origin, encoding="utf-8") as source:
            tree = ast.parse(source.read())
        assert not [node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)], name
