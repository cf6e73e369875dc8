"""The Python half of Squall's Python runtime: loading bundles, calls, checks and test runs.

Internal to the runtime library, which registers it as ``_squall_runtime`` once per process.
The Rust half passes each call a native handle (function name, ids, config, host services)
that stops working when the call returns.
"""

import ast
import base64
import importlib
import importlib.util
import inspect
import io
import itertools
import json
import logging
import os
import sys
import threading
import traceback
import unittest

import squall

# The runtime's embedded sources, as the Rust side fingerprints them; set right after import.
EMBEDDED_ID = None

SITE_PACKAGES = "site-packages"

# Which invocation (if any) the current thread runs, so that print and logging reach its logs.
_local = threading.local()
_bundle_numbers = itertools.count(1)
# Roots of the bundles loaded so far, for forgetting their modules before the next one loads.
_roots = []
# Loading a bundle and running tests change sys.path and sys.modules: one at a time.
_loading = threading.Lock()

_loads = json.loads
_dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


class _CallContext(squall.Context):
    """The ``context`` of one platform invocation, over the Rust handle."""

    __slots__ = ("_handle", "_config", "_trigger", "_logger", "_partial", "_streamed")

    def __init__(self, handle):
        self._handle = handle
        self._config = None
        self._trigger = None
        self._logger = None
        self._partial = None
        self._streamed = False

    @property
    def function_name(self):
        return self._handle.function_name()

    @property
    def invocation_id(self):
        return self._handle.invocation_id()

    @property
    def attempt(self):
        return self._handle.attempt()

    @property
    def deadline_ms(self):
        return self._handle.deadline_ms()

    @property
    def traceparent(self):
        return self._handle.traceparent()

    @property
    def config(self):
        if self._config is None:
            self._config = _object(self._handle.config_raw())
        return self._config

    @property
    def trigger(self):
        if self._trigger is None:
            self._trigger = _object(self._handle.trigger_raw())
        return self._trigger

    @property
    def logger(self):
        if self._logger is None:
            self._logger = squall.Logger(self._log)
        return self._logger

    def _log(self, level, message):
        self._handle.log(level, str(message))

    def cancelled(self):
        return self._handle.cancelled()

    def kv_get(self, key):
        return self._handle.kv_get(key)

    def kv_put(self, key, value, ttl_ms=0):
        self._handle.kv_put(key, _bytes(value, "value"), int(ttl_ms))

    def kv_delete(self, key):
        self._handle.kv_delete(key)

    def publish(self, subject, payload):
        self._handle.publish(subject, _bytes(payload, "payload"))

    def stream_write(self, chunk):
        self._handle.stream_write(_bytes(chunk, "chunk"))
        self._streamed = True


def _object(raw):
    if not raw:
        return {}
    try:
        value = _loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _bytes(value, what):
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be bytes or str, not {type(value).__name__}")


# ---- calls ---------------------------------------------------------------------------------


def invoke(handler, handle, payload, web):
    """Runs one call; returns ``(status, body, retry_after_ms)``: 0 with the output bytes,
    1 (error) or 2 (retry) with a message."""
    context = _CallContext(handle)
    _local.context = context
    try:
        if web:
            event = _web_event(context.trigger, payload)
        elif not payload:
            event = None
        else:
            try:
                event = _loads(payload)
            except ValueError:
                event = payload
        result = handler(event, context)
        if result is None and context._streamed:
            return 0, b"", 0  # a handler that streamed its output and returned nothing
        if isinstance(result, bytes):
            return 0, result, 0
        if isinstance(result, str):
            return 0, result.encode("utf-8"), 0
        if isinstance(result, (bytearray, memoryview)):
            return 0, bytes(result), 0
        return 0, _dumps(result).encode("utf-8"), 0
    except BaseException as error:  # noqa: B036 - SystemExit from a handler is its failure too
        return _failure(error, context)
    finally:
        _local.context = None
        _flush(context)


def _web_event(request, body):
    """The event of a web call: the request as the host describes it, with its body (text, or
    base64 with ``isBase64Encoded``), as a function URL's event carries it."""
    event = dict(request)
    # What a request sent through the ordinary invoke API lacks, as the Rust SDK reads it.
    event["method"] = event.get("method") or "POST"
    event["path"] = event.get("path") or "/"
    for field, empty in (("raw_query", ""), ("query", {}), ("headers", {}), ("remote_addr", "")):
        event.setdefault(field, empty)
    try:
        event["body"] = body.decode("utf-8")
        event["isBase64Encoded"] = False
    except UnicodeDecodeError:
        event["body"] = base64.b64encode(body).decode("ascii")
        event["isBase64Encoded"] = True
    return event


def _failure(error, context):
    kind = type(error)
    if kind.__name__ == "Retry" and hasattr(error, "after_ms"):
        try:
            after_ms = min(max(0, int(error.after_ms)), 2**63 - 1)
        except (TypeError, ValueError, OverflowError):
            after_ms = 0
        return 2, (_text(error) or "retry requested").encode("utf-8"), after_ms
    trace = error.__traceback__
    if trace is not None and trace.tb_frame.f_code is invoke.__code__:
        trace = trace.tb_next  # the handler's frames, not the runtime's
    lines = traceback.format_exception(kind, error, trace)
    context._log(squall.ERROR, "".join(lines).rstrip("\n"))
    text = _text(error)
    message = f"{kind.__name__}: {text}" if text else kind.__name__
    status = 2 if isinstance(error, squall.HostError) and error.retryable else 1
    return status, message.encode("utf-8", "replace"), 0


def _text(error):
    try:
        message = getattr(error, "message", None)
        return message if isinstance(message, str) and message else str(error)
    except Exception:  # a broken __str__ must not hide the failure itself
        return ""


# ---- print and logging ---------------------------------------------------------------------


class _LogStream(io.TextIOBase):
    """``sys.stdout``/``sys.stderr``: whole lines go to the logs of the invocation the thread
    runs, anything else to the process's own stream."""

    def __init__(self, level, fallback):
        super().__init__()
        self._level = level
        self._fallback = fallback

    @property
    def encoding(self):
        return "utf-8"

    def writable(self):
        return True

    def isatty(self):
        return False

    def write(self, text):
        context = getattr(_local, "context", None)
        if context is None:
            if self._fallback is not None:
                return self._fallback.write(text)
            return len(text)
        partial = context._partial
        if partial is None:
            partial = context._partial = {}
        data = partial.get(self._level, "") + text
        *lines, rest = data.split("\n")
        for line in lines:
            context._log(self._level, line)
        partial[self._level] = rest
        return len(text)

    def flush(self):
        if getattr(_local, "context", None) is None and self._fallback is not None:
            self._fallback.flush()


def _flush(context):
    partial = context._partial
    if partial:
        context._partial = None
        for level, rest in partial.items():
            if rest:
                context._log(level, rest)


_LEVELS = ((logging.ERROR, squall.ERROR), (logging.WARNING, squall.WARN), (logging.INFO, squall.INFO))


class _LogHandler(logging.Handler):
    """Sends ``logging`` records to the logs of the invocation the thread runs."""

    def emit(self, record):
        try:
            context = getattr(_local, "context", None)
            text = self.format(record)
            if context is None:
                stream = sys.__stderr__
                if stream is not None:
                    stream.write(text + "\n")
                return
            level = next((ours for theirs, ours in _LEVELS if record.levelno >= theirs), squall.DEBUG)
            context._log(level, text)
        except Exception:
            self.handleError(record)


def install():
    """Prepares the process's interpreter once: streams, logging, and a path with the
    standard library only (a function sees its own bundle's packages, not the host's)."""
    if not hasattr(sys, "argv"):
        sys.argv = [""]
    sys.dont_write_bytecode = True  # a bundle's directory stays as it was extracted
    sys.path[:] = [p for p in sys.path if not p.endswith(("site-packages", "dist-packages"))]
    sys.stdout = _LogStream(squall.INFO, sys.__stdout__)
    sys.stderr = _LogStream(squall.WARN, sys.__stderr__)
    handler = _LogHandler()
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


# ---- loading -------------------------------------------------------------------------------


def _inside(path, root):
    return path == root or path.startswith(root + os.sep)


def _forget(roots):
    """Drops the modules loaded from ``roots`` (not from their site-packages) from
    ``sys.modules``, so that another bundle's ``import helpers`` finds its own file. Whoever
    imported them keeps them; dependencies stay shared, since C extensions cannot load twice."""
    for name, module in list(sys.modules.items()):
        if name.rpartition(".")[2].startswith("_squall_bundle_"):
            continue  # a handler module, already under a name of its own
        path = getattr(module, "__file__", None)
        if not isinstance(path, str):
            continue
        for root in roots:
            if _inside(path, root) and not _inside(path, os.path.join(root, SITE_PACKAGES)):
                del sys.modules[name]
                break


def _put_on_path(root):
    site = os.path.join(root, SITE_PACKAGES)
    entries = [root, site] if os.path.isdir(site) else [root]
    sys.path[:] = entries + [p for p in sys.path if p not in entries]


def module_file(root, module):
    """The file of a dotted module name inside ``root``: ``a/b.py`` or ``a/b/__init__.py``."""
    base = os.path.join(root, *module.split("."))
    for path in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(path):
            return path
    return None


def open_bundle(root, module, function):
    """Imports the handler module of the bundle at ``root`` under a name of its own and returns
    the handler; raises ``LookupError`` with a message for a missing module or handler."""
    with _loading:
        return _open_bundle(os.path.abspath(root), module, function)


def _open_bundle(root, module, function):
    path = module_file(root, module)
    if path is None:
        raise LookupError(f"handler module {module.replace('.', '/')}.py not found in the bundle")
    importlib.invalidate_caches()
    _forget(_roots)
    _put_on_path(root)
    _roots.append(root)
    parent, _, leaf = module.rpartition(".")
    unique = f"_squall_bundle_{next(_bundle_numbers)}_{leaf}"
    loaded = None
    try:
        if parent:
            importlib.import_module(parent)
            unique = f"{parent}.{unique}"
        package = [os.path.dirname(path)] if os.path.basename(path) == "__init__.py" else None
        spec = importlib.util.spec_from_file_location(
            unique, path, submodule_search_locations=package
        )
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[unique] = loaded
        spec.loader.exec_module(loaded)
    except BaseException as error:
        if loaded is not None:
            sys.modules.pop(unique, None)
        name = os.path.relpath(path, root)
        raise LookupError(f"importing {name} failed:\n{_user_traceback(error, root)}") from None
    handler = getattr(loaded, function, None)
    if handler is None:
        raise LookupError(f"{os.path.relpath(path, root)} defines no {function}")
    if not callable(handler):
        raise LookupError(f"{os.path.relpath(path, root)}: {function} is not a function")
    if inspect.iscoroutinefunction(handler):
        raise LookupError(
            f"{os.path.relpath(path, root)}: {function} is async; Python handlers are plain functions"
        )
    return handler


def _user_traceback(error, root):
    """The traceback from the first frame in the bundle on, without the import machinery."""
    trace = error.__traceback__
    while trace is not None and not _inside(trace.tb_frame.f_code.co_filename, root):
        trace = trace.tb_next
    lines = traceback.format_exception(type(error), error, trace or error.__traceback__)
    return "".join(lines).rstrip("\n")


def describe(error):
    """An exception with its traceback, for a load failure's message."""
    return "".join(traceback.format_exception(type(error), error, error.__traceback__)).rstrip("\n")


# ---- deploy-time check ---------------------------------------------------------------------


def _sources(root):
    for directory, subdirs, files in os.walk(root):
        at_root = directory == root
        subdirs[:] = sorted(
            d
            for d in subdirs
            if not d.startswith(".") and d != "__pycache__" and not (at_root and d == SITE_PACKAGES)
        )
        for name in sorted(files):
            if name.endswith(".py"):
                yield os.path.join(directory, name)


def _defines(body, function):
    """The first top-level statement that binds ``function``, looking into if/try/with blocks."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name == function:
                return node
        elif isinstance(node, ast.Assign):
            if any(isinstance(t, ast.Name) and t.id == function for t in node.targets):
                return node
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            if isinstance(node.target, ast.Name) and node.target.id == function:
                return node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if (alias.asname or alias.name.split(".")[0]) == function:
                    return node
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            blocks = [node.body, getattr(node, "orelse", []), getattr(node, "finalbody", [])]
            blocks += [h.body for h in getattr(node, "handlers", [])]
            for block in blocks:
                found = _defines(block, function)
                if found is not None:
                    return found
    return None


def check(root, module, function):
    """Validates the bundle's Python without running it; returns the problems, one
    ``FILE:LINE: message`` (or ``FILE: message``) each, empty when it is valid."""
    root = os.path.abspath(root)
    problems = []
    for path in _sources(root):
        name = os.path.relpath(path, root)
        try:
            with open(path, "rb") as file:
                source = file.read()
            compile(source, name, "exec", dont_inherit=True)
        except SyntaxError as error:
            problems.append(f"{name}:{error.lineno or 1}: {error.msg}")
        except (ValueError, OSError) as error:
            problems.append(f"{name}:1: {error}")
    path = module_file(root, module)
    if path is None:
        problems.append(f"handler module {module.replace('.', '/')}.py not found in the bundle")
        return problems
    name = os.path.relpath(path, root)
    if any(p.startswith(name + ":") for p in problems):
        return problems
    with open(path, "rb") as file:
        tree = ast.parse(file.read(), name)
    node = _defines(tree.body, function)
    if node is None:
        problems.append(
            f"{name}: no top-level {function} (the handler is {module}.{function}); "
            f"define `def {function}(event, context):`"
        )
    elif isinstance(node, ast.AsyncFunctionDef):
        problems.append(
            f"{name}:{node.lineno}: {function} is `async def`; Python handlers are called "
            f"synchronously, use `def {function}(event, context):`"
        )
    return problems


# ---- the bundle's own tests ----------------------------------------------------------------


def run_tests(root):
    """Runs the bundle's ``test_*.py`` files with unittest; returns ``(status, report)``:
    0 all passed, 1 a test failed, 2 the tests could not run."""
    with _loading:
        return _run_tests(os.path.abspath(root))


def _run_tests(root):
    importlib.invalidate_caches()
    saved_path = list(sys.path)
    _forget(_roots + [root])
    _put_on_path(root)
    report = io.StringIO()
    try:
        suite = unittest.TestLoader().discover(root, pattern="test_*.py", top_level_dir=root)
        if suite.countTestCases() == 0:
            return 2, "found no tests: add test_*.py files with unittest.TestCase classes\n"
        runner = unittest.TextTestRunner(stream=report, verbosity=2, buffer=True)
        result = runner.run(suite)
        return (0 if result.wasSuccessful() else 1), report.getvalue()
    except Exception as error:
        return 2, report.getvalue() + "the tests could not run:\n" + describe(error) + "\n"
    finally:
        sys.path[:] = saved_path
        _forget([root])
