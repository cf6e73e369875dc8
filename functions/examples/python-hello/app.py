"""Example function: greets a name with the greeting word from the function's config and counts
how often each name was greeted, in the function's own state."""

import re

# Names are bounded so that their state key stays well under the 256 bytes a key may have.
MAX_NAME_BYTES = 64
# The bytes a state key may hold as they are; any other byte of a name is written `=XX`.
_PLAIN = re.compile(rb"[A-Za-z0-9_.-]")


def visits_key(name):
    """The state key of `name`'s counter: `visits/` and the name's UTF-8 bytes, each byte that
    is not a letter, digit, `_`, `.` or `-` written as `=XX` (so "Zoë Ng" is
    `visits/Zo=C3=AB=20Ng`): readable, and never two names on one key."""
    escaped = "".join(
        chr(byte) if _PLAIN.fullmatch(bytes([byte])) else f"={byte:02X}"
        for byte in name.encode("utf-8")
    )
    return f"visits/{escaped}"


def handler(event, context):
    """`{"name": "Ada"}` (the name, or the whole input, may be left out) → `{"greeting":
    "Hello, Ada!", "visits": 3}`: the greeting word is the config's `greeting`, and `visits`
    counts this name's greetings so far, this one included."""
    name = event.get("name") if isinstance(event, dict) else None
    if not isinstance(name, str) or not name.strip():
        name = "world"
    name = name.strip()
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise ValueError(f"a name is at most {MAX_NAME_BYTES} bytes of UTF-8")
    word = context.config.get("greeting") or "Hello"
    # Read, add one, write: two calls for one name at the same instant can both read the same
    # count (the function runs one call at a time per worker, but a fleet has several).
    key = visits_key(name)
    visits = int(context.kv_get(key) or b"0") + 1
    context.kv_put(key, str(visits))
    context.logger.info(f"hello: greeting {name} (visit {visits})")
    return {"greeting": f"{word}, {name}!", "visits": visits}
