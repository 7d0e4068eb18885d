"""The error hierarchy: every class and code in ``runtime/errors.py``, each with its kind, and
mapped to HTTP once (``api/errors.py``)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from api.errors import from_cody, from_http
from runtime import errors
from runtime.errors import CODES, CodyError, ErrorKind

ROOT = Path(__file__).resolve().parents[2]


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
            # runtime/__init__.py names the constants (its lazy face maps name -> module)
            if p not in (ROOT / "runtime" / "errors.py", ROOT / "runtime" / "__init__.py")]


def spelled_codes(path: Path) -> list[str]:
    """Error codes written as literals in one module: a ``code=`` argument, a ``"code"`` key,
    or any string that is one of our codes."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        literals: list[ast.expr] = []
        if isinstance(node, ast.Call):
            literals += [k.value for k in node.keywords if k.arg == "code"]
        elif isinstance(node, ast.Dict):
            literals += [v for k, v in zip(node.keys, node.values, strict=True)
                         if isinstance(k, ast.Constant) and k.value == "code"]
        elif isinstance(node, ast.Constant) and node.value in CODES:
            literals.append(node)
        where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
        found += [f"{where}:{lit.lineno}: {lit.value}" for lit in literals
                  if isinstance(lit, ast.Constant) and isinstance(lit.value, str)]
    return found


def test_no_error_code_is_spelled_outside_runtime_errors() -> None:
    """An error code written anywhere but ``runtime/errors.py`` is a fact in a second place:
    import the constant (or raise the class) instead."""
    assert [hit for path in product_sources() for hit in spelled_codes(path)] == []


def test_the_check_finds_what_it_looks_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text('raise E("x", code="MY_CODE")\n'
                      'body = {"code": "OTHER"}\n'
                      'x = "REDIS_UNAVAILABLE"\n'
                      'ok = {"code": CONSTANT, "LC_ALL": "C"}\n')
    assert sorted(h.split(": ", 1)[1] for h in spelled_codes(sample)) == [
        "MY_CODE", "OTHER", "REDIS_UNAVAILABLE"]


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
