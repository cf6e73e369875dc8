"""The security of the web-form example: form bodies, user names, salted scrypt password hashes
and HMAC-signed session cookies. Standard library only, no host: tested by test_auth.py."""

import base64
import functools
import hashlib
import hmac
import re
import secrets
from urllib.parse import parse_qsl

# scrypt's cost, chosen for a small shared machine: N = 2**14, r = 8, p = 1 uses 16 MiB and
# takes some tens of milliseconds (OWASP's minimum is N = 2**17). Raise it where hashing can
# take longer; the parameters are stored in each hash, so older hashes keep verifying.
SCRYPT_LOG_N = 14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
# Hashes read back from state are checked against these bounds before scrypt runs on them.
_MAX_LOG_N = 20
_MAX_MEMORY = 256 * 1024 * 1024
# Passwords are bounded so a huge one cannot make hashing expensive.
PASSWORD_CHARS = range(8, 129)
_USERNAME = re.compile(r"[a-z0-9_-]{3,32}")


def form_decode(body):
    """The fields of an `application/x-www-form-urlencoded` body (bytes): `+` is a space, `%XX`
    a byte; a repeated field keeps its first value."""
    fields = {}
    text = body.decode("utf-8", "replace")
    for name, value in parse_qsl(text, keep_blank_values=True, errors="replace"):
        fields.setdefault(name, value)
    return fields


def valid_username(name):
    """A user name is 3 to 32 of `a-z`, `0-9`, `_` and `-` (so it is a valid state key and never
    needs escaping in a cookie)."""
    return isinstance(name, str) and _USERNAME.fullmatch(name) is not None


def _b64(data):
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text):
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _scrypt(password, salt, log_n, r, p):
    n = 1 << log_n
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=_MAX_MEMORY,
        dklen=HASH_BYTES,
    )


def hash_password(password):
    """`password` hashed with scrypt and a fresh random salt, in the PHC-like form
    `$scrypt$ln=14,r=8,p=1$<salt>$<hash>` (base64 without padding)."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P)
    params = f"ln={SCRYPT_LOG_N},r={SCRYPT_R},p={SCRYPT_P}"
    return f"$scrypt${params}${_b64(salt)}${_b64(digest)}"


def check_password(password, stored):
    """Whether `password` matches the hash `stored` (with the parameters stored in it); a hash
    that does not parse matches nothing."""
    try:
        empty, scheme, params, salt, digest = stored.split("$")
        values = dict(part.split("=", 1) for part in params.split(","))
        log_n, r, p = int(values["ln"]), int(values["r"]), int(values["p"])
        salt, digest = _unb64(salt), _unb64(digest)
    except (AttributeError, KeyError, TypeError, ValueError):
        return False
    affordable = 1 <= log_n <= _MAX_LOG_N and 1 <= r <= 32 and 1 <= p <= 4
    if empty or scheme != "scrypt" or not affordable:
        return False
    try:
        computed = _scrypt(password, salt, log_n, r, p)
    except ValueError:  # parameters scrypt refuses, or over the memory bound
        return False
    return hmac.compare_digest(computed, digest)


@functools.cache
def decoy_hash():
    """A hash to check a sign-in for an unknown user against, so that it takes as long as one
    for a known user and the timing does not tell which names exist. Made once per process."""
    return hash_password("no user has this password")


def session_value(secret, user, expires):
    """The session cookie's value for `user` until `expires` (Unix seconds):
    `<user>.<expires>.<hex HMAC-SHA256(secret, "session:v1:<user>:<expires>")>`."""
    message = f"session:v1:{user}:{expires}".encode("utf-8")
    mac = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
    return f"{user}.{expires}.{mac}"


def verify_session(secret, value, now_s):
    """The user a session cookie's value names, when it is signed with `secret` and not
    expired; otherwise None."""
    parts = value.split(".")
    if len(parts) != 3 or not valid_username(parts[0]) or not parts[1].isascii():
        return None
    user, expires, _ = parts
    if not expires.isdigit():
        return None
    expected = session_value(secret, user, int(expires))
    # compare_digest does not stop at the first difference, so timing does not reveal a prefix.
    if not hmac.compare_digest(expected.encode("utf-8"), value.encode("utf-8")):
        return None
    return user if now_s < int(expires) else None
