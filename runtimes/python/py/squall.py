"""Squall's Python API: typed retries, host-service errors and a local context for tests.

The platform registers this module as ``squall`` in the interpreter that runs a Python
function. It is plain Python with no dependencies, so the same file next to a function's code
lets ``python3 -m unittest`` run the function's tests on any CPython 3.

    import squall

    def handler(event, context):
        if not context.kv_get("ready"):
            raise squall.Retry(after_ms=500, message="not ready yet")
        return {"ok": True}

    # test_app.py
    from squall.testing import Context
    ctx = Context(config={"greeting": "Hi"})
"""

import re
import sys
import time
import types

__all__ = ["Context", "HostError", "Logger", "Retry", "testing"]

# Log levels as the platform numbers them.
ERROR, WARN, INFO, DEBUG = 1, 2, 3, 4
_LEVEL_NAMES = {ERROR: "ERROR", WARN: "WARN", INFO: "INFO", DEBUG: "DEBUG", 5: "TRACE"}


class Retry(Exception):
    """Raise to ask the platform for another attempt.

    ``after_ms`` suggests a delay in milliseconds; 0 lets the function's backoff policy decide.
    The platform recognises any exception class named ``Retry`` with an ``after_ms`` attribute,
    so a copy of this module works as well as the platform's own.
    """

    def __init__(self, after_ms=0, message=""):
        if isinstance(after_ms, str) and not message:
            # Retry("busy"): a message given where the delay goes.
            after_ms, message = 0, after_ms
        after_ms = int(after_ms)
        if after_ms < 0:
            raise ValueError("after_ms must not be negative")
        super().__init__(message)
        self.after_ms = after_ms
        self.message = message

    def __str__(self):
        return self.message or "retry requested"


class HostError(Exception):
    """A host service (KV, publish or stream_write) failed.

    ``code`` says why: ``"unavailable"`` (the store did not answer in time; retrying may
    succeed), ``"denied"``, ``"too_large"``, ``"invalid"``, ``"unsupported"`` (no host offers
    the service) or ``"status N"``. Left uncaught, an unavailable store asks for a retry and
    every other code fails the invocation.
    """

    def __init__(self, code, message=""):
        super().__init__(message or code)
        self.code = code
        self.retryable = code == "unavailable"


def _format(message, args):
    return str(message) % args if args else str(message)


class Logger:
    """Writes lines to the invocation's logs, like a ``logging.Logger`` without handlers."""

    __slots__ = ("_log",)

    def __init__(self, log):
        self._log = log

    def debug(self, message, *args):
        self._log(DEBUG, _format(message, args))

    def info(self, message, *args):
        self._log(INFO, _format(message, args))

    def warning(self, message, *args):
        self._log(WARN, _format(message, args))

    warn = warning

    def error(self, message, *args):
        self._log(ERROR, _format(message, args))

    critical = error

    def exception(self, message, *args):
        """Logs at error level with the traceback of the exception being handled."""
        import traceback

        text = _format(message, args)
        if sys.exc_info()[0] is not None:
            text = text + "\n" + traceback.format_exc().rstrip("\n")
        self._log(ERROR, text)


class Context:
    """What a handler's ``context`` offers.

    Attributes: ``function_name``, ``invocation_id``, ``attempt`` (1-based), ``deadline_ms``
    (milliseconds since the Unix epoch), ``config`` (dict), ``secrets`` (dict, the config's
    ``secrets``), ``trigger`` (dict: what triggered the invocation, ``{"source": ...}``),
    ``traceparent`` (str or None) and ``logger``. Methods: ``get_remaining_time_in_millis()``,
    ``cancelled()``, ``kv_get(key)``, ``kv_put(key, value, ttl_ms=0)``, ``kv_delete(key)``,
    ``publish(subject, payload)`` and ``stream_write(chunk)`` (writes one chunk of the output
    now; what the handler returns follows as the last chunk, nothing for ``None``). The
    platform's context and ``squall.testing.Context`` both implement it; a failed host service
    raises ``HostError``.
    """

    __slots__ = ()

    def get_remaining_time_in_millis(self):
        return max(0, self.deadline_ms - int(time.time() * 1000))

    @property
    def secrets(self):
        secrets = self.config.get("secrets")
        return secrets if isinstance(secrets, dict) else {}


# ---- squall.testing ------------------------------------------------------------------------

_KEY = re.compile(r"[A-Za-z0-9_=./-]{1,256}")
_MAX_VALUE = 1024 * 1024


def _as_bytes(value, what):
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be bytes or str, not {type(value).__name__}")


class _TestContext(Context):
    """A context for unit tests: KV in memory, publishes and streamed chunks recorded, logs
    collected.

    ``kv`` holds the stored values (key -> bytes), ``published`` the ``(subject, payload)``
    pairs in order, ``streamed`` the chunks ``stream_write`` wrote (bytes, in order), ``logs``
    the ``(level, message)`` lines (level ``"INFO"`` …); logs are also written to ``sys.stderr``
    so that unittest shows them with a failing test. ``cancel()`` makes ``cancelled()`` true.
    Keys and subjects follow the platform's rules, so a test fails where the platform would.
    """

    def __init__(
        self,
        config=None,
        secrets=None,
        *,
        function_name="test",
        invocation_id="test-invocation",
        attempt=1,
        timeout_ms=30_000,
        trigger=None,
        kv=None,
    ):
        self.function_name = function_name
        self.invocation_id = invocation_id
        self.attempt = attempt
        self.deadline_ms = int(time.time() * 1000) + int(timeout_ms)
        self.config = dict(config or {})
        self._secrets = dict(secrets) if secrets is not None else None
        self.trigger = dict(trigger or {"source": "test"})
        self.traceparent = None
        self.kv = {key: _as_bytes(value, "value") for key, value in (kv or {}).items()}
        self._expiry = {}
        self.published = []
        self.streamed = []
        self.logs = []
        self._cancelled = False
        self.logger = Logger(self._log)

    @property
    def secrets(self):
        if self._secrets is not None:
            return self._secrets
        return Context.secrets.fget(self)

    def _log(self, level, message):
        name = _LEVEL_NAMES.get(level, str(level))
        self.logs.append((name, message))
        print(f"{name} {message}", file=sys.stderr)

    def cancel(self):
        self._cancelled = True

    def cancelled(self):
        return self._cancelled

    @staticmethod
    def _check_key(key):
        if not isinstance(key, str):
            raise TypeError(f"key must be str, not {type(key).__name__}")
        if len(key.encode("utf-8")) > 256:
            raise HostError("too_large", "key over 256 bytes")
        if not _KEY.fullmatch(key) or key.startswith(".") or key.endswith("."):
            raise HostError("invalid", f"invalid key {key!r}")

    def kv_get(self, key):
        self._check_key(key)
        expiry = self._expiry.get(key)
        if expiry is not None and time.monotonic() >= expiry:
            self.kv.pop(key, None)
            self._expiry.pop(key, None)
        return self.kv.get(key)

    def kv_put(self, key, value, ttl_ms=0):
        self._check_key(key)
        value = _as_bytes(value, "value")
        if len(value) > _MAX_VALUE:
            raise HostError("too_large", "value over 1 MiB")
        self.kv[key] = value
        if ttl_ms:
            self._expiry[key] = time.monotonic() + ttl_ms / 1000
        else:
            self._expiry.pop(key, None)

    def kv_delete(self, key):
        self._check_key(key)
        self.kv.pop(key, None)
        self._expiry.pop(key, None)

    def publish(self, subject, payload):
        if not isinstance(subject, str):
            raise TypeError(f"subject must be str, not {type(subject).__name__}")
        if not subject.startswith("events.") or len(subject) == len("events."):
            raise HostError("denied", f"subject {subject!r} is not under events.")
        self.published.append((subject, _as_bytes(payload, "payload")))

    def stream_write(self, chunk):
        self.streamed.append(_as_bytes(chunk, "chunk"))


# `squall.testing` is a submodule of this one-file module: registered in sys.modules so that
# `import squall.testing` and `from squall.testing import Context` work.
testing = types.ModuleType(__name__ + ".testing", "A local context for a function's unit tests.")
testing.Context = _TestContext
_TestContext.__module__ = testing.__name__
_TestContext.__name__ = _TestContext.__qualname__ = "Context"
sys.modules[testing.__name__] = testing
