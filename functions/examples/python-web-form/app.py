"""Example web function: a small web application backend in Python — sign-up, sign-in and
sign-out over HTML form posts, salted scrypt password hashes in the function's state, signed
session cookies.

Routes below `/function/<name>`: `GET /` (the forms, or "signed in as X"), `POST /sign-up`,
`POST /sign-in`, `POST /sign-out`. A post that succeeds answers 303 See Other back to the page
(post/redirect/get); one that fails shows the form again with a 4xx status.
"""

import base64
import html
import json
import time

import auth

# The function's secret that keys the session cookies' signatures.
SECRET_NAME = "SESSION_SECRET"
# The session cookie's name.
COOKIE = "session"
# How long a session lasts unless the config's `session_ttl_s` says.
DEFAULT_SESSION_TTL_S = 24 * 60 * 60


def _page(status, title, body):
    page = (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"</head>\n<body>\n<h1>{title}</h1>\n{body}</body></html>\n"
    )
    return {
        "statusCode": status,
        "headers": {"content-type": "text/html; charset=utf-8", "cache-control": "no-store"},
        "cookies": [],
        "body": page,
        "isBase64Encoded": False,
    }


def _forms(status, base, message=None):
    """The sign-up and sign-in forms, with `message` above them."""
    alert = f'<p role="alert">{html.escape(message)}</p>\n' if message else ""

    def form(action, label, autocomplete):
        return (
            f'<form method="post" action="{base}/{action}">\n<h2>{label}</h2>\n'
            '<label>User name <input name="username" required></label>\n'
            '<label>Password <input name="password" type="password" '
            f'autocomplete="{autocomplete}" required></label>\n'
            f"<button>{label}</button>\n</form>\n"
        )

    sign_in = form("sign-in", "Sign in", "current-password")
    sign_up = form("sign-up", "Sign up", "new-password")
    body = alert + sign_in + sign_up
    return _page(status, "Welcome", body)


def _signed_in(base, user):
    body = (
        f"<p>Signed in as <strong>{html.escape(user)}</strong>.</p>\n"
        f'<form method="post" action="{base}/sign-out"><button>Sign out</button></form>\n'
    )
    return _page(200, "Welcome back", body)


def _see_page(base, cookie):
    """303 See Other back to the page: the browser follows it with a GET, so reloading the page
    does not post the form again."""
    return {"statusCode": 303, "headers": {"location": base}, "cookies": [cookie], "body": ""}


def _set_session(value, max_age, secure):
    """A `Set-Cookie` value for the session: HttpOnly (no script reads it), SameSite=Lax (not
    sent with other sites' posts, which stops cross-site request forgery of the forms)."""
    flags = "; Secure" if secure else ""
    return f"{COOKIE}={value}; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Lax{flags}"


def _cookie(headers, name):
    """The value of cookie `name` in the request's `Cookie` header, or None."""
    for pair in headers.get("cookie", "").split(";"):
        key, eq, value = pair.strip().partition("=")
        if eq and key == name:
            return value
    return None


def _body(event):
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        return base64.b64decode(body)
    return body.encode("utf-8")


class Settings:
    """The function's settings, read from its config and secrets."""

    def __init__(self, context, secret):
        config = context.config
        base = config.get("base_path")
        # Where the function is served: `/function/<name>` unless the config's `base_path` says.
        if isinstance(base, str):
            self.base = base.rstrip("/")
        else:
            self.base = f"/function/{context.function_name}"
        self.secret = secret
        ttl = config.get("session_ttl_s")
        valid_ttl = isinstance(ttl, int) and not isinstance(ttl, bool) and ttl > 0
        self.session_ttl_s = ttl if valid_ttl else DEFAULT_SESSION_TTL_S
        self.secure = config.get("secure_cookies") is True


def handler(event, context):
    """Serves the pages and the form posts."""
    secret = context.secrets.get(SECRET_NAME)
    if not isinstance(secret, str) or len(secret) < 16:
        context.logger.error(
            f"web-form: the secret {SECRET_NAME} is not set (16 characters at least)"
        )
        return _page(500, "Not configured", "<p>This site is not configured yet.</p>\n")
    settings = Settings(context, secret)
    base = settings.base
    method, path = event.get("method", "POST"), event.get("path", "/")
    headers = {name.lower(): value for name, value in (event.get("headers") or {}).items()}
    if method in ("GET", "HEAD") and path == "/":
        given = _cookie(headers, COOKIE)
        user = auth.verify_session(secret, given, int(time.time())) if given is not None else None
        if user is not None:
            return _signed_in(base, user)
        page = _forms(200, base)
        if given is not None:
            # A cookie that does not verify (tampered, expired, another key's) is cleared.
            page["cookies"].append(_set_session("", 0, settings.secure))
        return page
    if method == "POST" and path in ("/sign-up", "/sign-in"):
        content_type = headers.get("content-type", "").lower()
        if not content_type.startswith("application/x-www-form-urlencoded"):
            return _forms(415, base, "Please send the form.")
        fields = auth.form_decode(_body(event))
        username, password = fields.get("username"), fields.get("password")
        if username is None or password is None:
            return _forms(400, base, "Both fields are needed.")
        username = username.strip().lower()
        if path == "/sign-up":
            return _sign_up(context, settings, username, password)
        return _sign_in(context, settings, username, password)
    if method == "POST" and path == "/sign-out":
        return _see_page(base, _set_session("", 0, settings.secure))
    if path in ("/", "/sign-up", "/sign-in", "/sign-out"):
        page = _page(405, "Method not allowed", "")
        page["headers"]["allow"] = "GET, HEAD" if path == "/" else "POST"
        return page
    return _page(404, "Not found", "")


def _start_session(settings, user):
    """The answer that signs `user` in: back to the page with a fresh session cookie."""
    expires = int(time.time()) + settings.session_ttl_s
    value = auth.session_value(settings.secret, user, expires)
    return _see_page(settings.base, _set_session(value, settings.session_ttl_s, settings.secure))


def _sign_up(context, settings, username, password):
    if not auth.valid_username(username):
        return _forms(400, settings.base, "A user name is 3 to 32 letters, digits, _ or -.")
    if len(password) not in auth.PASSWORD_CHARS:
        return _forms(400, settings.base, "A password is 8 to 128 characters.")
    key = f"user/{username}"
    # Not a transaction: two sign-ups of one new name at the same instant can both pass this
    # check, and the later write wins (see the README).
    if context.kv_get(key) is not None:
        return _forms(409, settings.base, "That user name is already taken.")
    record = {"hash": auth.hash_password(password)}
    context.kv_put(key, json.dumps(record, separators=(",", ":")))
    context.logger.info(f"web-form: {username} signed up")
    return _start_session(settings, username)


def _sign_in(context, settings, username, password):
    stored = context.kv_get(f"user/{username}") if auth.valid_username(username) else None
    if stored is not None:
        matches = auth.check_password(password, json.loads(stored).get("hash"))
    else:
        auth.check_password(password, auth.decoy_hash())
        matches = False
    if not matches:
        return _forms(401, settings.base, "Wrong user name or password.")
    return _start_session(settings, username)
