"""The error hierarchy: every class and code in ``runtime/errors.py``, each with its kind, and
mapped to HTTP once (``api/errors.py``)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from api.errors import from_cody, from_http
from runtime import errors
from runtime.errors import CODES, CodyError, ErrorKind

ROOT = Path(__file__).resolve().parents[2]
CODE_SHAPE = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)+$")
NOT_ERROR_CODES = {"RESPONSE_TIMEOUT", "MAX_CONTENT_LENGTH", "BODY_TIMEOUT"}
"""Quart's config keys: the only strings shaped like a code that are not one."""


def all_error_classes() -> list[type[CodyError]]:
    out: list[type[CodyError]] = [CodyError]
    i = 0
    while i < len(out):
        out.extend(c for c in out[i].__subclasses__() if c.__module__ == "runtime.errors")
        i += 1
    return out


@pytest.mark.parametrize("cls", all_error_classes(), ids=lambda c: c.__name__)
def test_every_class_has_a_registered_code_and_a_kind_that_fits_its_status(
        cls: type[CodyError]) -> None:
    assert CODES[cls.code] is cls.kind
    if 400 <= cls.status < 500:
        assert cls.kind is ErrorKind.CLIENT
    if cls.status == 503:
        assert cls.kind is ErrorKind.INFRASTRUCTURE
        assert cls.retry_after_s is not None and cls.retry_after_s > 0
    if cls.kind is ErrorKind.INFRASTRUCTURE:
        assert cls.status == 503
    assert (cls.kind is ErrorKind.INFRASTRUCTURE) == errors.is_infrastructure(
        cls("x") if cls is not errors.HttpError else errors.HttpError("x", status=499))


def test_every_code_constant_is_registered() -> None:
    constants = {v for k, v in vars(errors).items() if k.isupper() and isinstance(v, str)}
    assert constants and constants <= set(CODES)
    assert errors.RUN_ORPHANED in CODES and CODES[errors.RUN_ORPHANED] is \
        ErrorKind.INFRASTRUCTURE


def product_sources() -> list[Path]:
    return [p for pkg in ("runtime", "actors", "api") for p in sorted((ROOT / pkg).rglob("*.py"))
            if p != ROOT / "runtime" / "errors.py"]


def test_no_error_code_is_spelled_outside_runtime_errors() -> None:
    """An error code (a string like ``SOME_CODE``) written anywhere but ``runtime/errors.py``
    is a fact in a second place: import the constant (or the class) instead."""
    found: list[str] = []
    for path in product_sources():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                value = node.value
                if (CODE_SHAPE.match(value) and value not in NOT_ERROR_CODES
                        and not value.startswith(("CODY_", "OPENAI_", "ANTHROPIC_"))):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {value}")
    assert found == []


def test_an_infrastructure_error_is_a_503_with_retry_after() -> None:
    for exc in (errors.ShuttingDown("the server is shutting down"),
                errors.RedisUnavailable("down"), errors.StoreUnavailable("down")):
        response = from_cody(exc)
        assert response.status_code == 503
        assert response.headers["Retry-After"] == str(exc.retry_after_s)


async def test_http_refusals_map_to_our_codes() -> None:
    from werkzeug.exceptions import MethodNotAllowed, NotFound, UnsupportedMediaType

    for exc, code in [(NotFound(), "NOT_FOUND"), (MethodNotAllowed(), "METHOD_NOT_ALLOWED"),
                      (UnsupportedMediaType(), "UNSUPPORTED_MEDIA_TYPE")]:
        response = from_http(exc)
        assert response.status_code == exc.code
        body = json.loads(await response.get_data())
        assert body["error"]["code"] == code
