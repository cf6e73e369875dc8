"""Unit tests of app.py's pages and form posts: `squall test functions/examples/python-web-form`."""

import json
import time
import unittest
from urllib.parse import urlencode

from squall.testing import Context

import app
import auth

SECRET = "0123456789abcdef"
FORM = "application/x-www-form-urlencoded"


def context():
    return Context(
        config={"session_ttl_s": 3600},
        secrets={"SESSION_SECRET": SECRET},
        function_name="py-web-form",
    )


def request(method, path, headers=None, body=""):
    return {"source": "web", "method": method, "path": path, "raw_query": "", "query": {},
            "headers": headers or {}, "remote_addr": "127.0.0.1", "body": body,
            "isBase64Encoded": False}


def post(ctx, path, fields, cookie=None):
    headers = {"content-type": FORM}
    if cookie:
        headers["cookie"] = cookie
    return app.handler(request("POST", path, headers, urlencode(fields)), ctx)


def session_of(answer):
    cookie = answer["cookies"][0]
    return cookie.split(";")[0]


class PageTest(unittest.TestCase):
    def test_the_page_shows_the_forms_without_a_valid_session(self):
        ctx = context()
        page = app.handler(request("GET", "/"), ctx)
        self.assertEqual(page["statusCode"], 200)
        self.assertIn('action="/function/py-web-form/sign-up"', page["body"])
        self.assertEqual(page["cookies"], [])
        value = auth.session_value(SECRET, "ada", int(time.time()) + 60)
        page = app.handler(request("GET", "/", {"cookie": f"theme=dark; session={value}"}), ctx)
        self.assertIn("Signed in as <strong>ada</strong>", page["body"])
        forged = "session=" + value.replace("ada", "eve", 1)
        page = app.handler(request("GET", "/", {"cookie": forged}), ctx)
        self.assertIn("Sign up", page["body"])
        self.assertEqual(len(page["cookies"]), 1, "the bad cookie is cleared")
        self.assertTrue(page["cookies"][0].startswith("session=; Max-Age=0;"))

    def test_without_the_secret_the_site_is_not_configured(self):
        for secrets in ({}, {"SESSION_SECRET": "short"}):
            ctx = Context(secrets=secrets)
            page = app.handler(request("GET", "/"), ctx)
            self.assertEqual(page["statusCode"], 500)
            self.assertIn("not configured", page["body"])
            self.assertEqual(ctx.logs[0][0], "ERROR")

    def test_other_methods_and_paths_are_refused(self):
        ctx = context()
        page = app.handler(request("GET", "/sign-in"), ctx)
        self.assertEqual((page["statusCode"], page["headers"]["allow"]), (405, "POST"))
        page = app.handler(request("DELETE", "/"), ctx)
        self.assertEqual((page["statusCode"], page["headers"]["allow"]), (405, "GET, HEAD"))
        self.assertEqual(app.handler(request("GET", "/admin"), ctx)["statusCode"], 404)

    def test_base_path_moves_the_forms_and_redirects(self):
        ctx = Context(config={"base_path": "/app/"}, secrets={"SESSION_SECRET": SECRET})
        self.assertIn('action="/app/sign-in"', app.handler(request("GET", "/"), ctx)["body"])
        answer = post(ctx, "/sign-out", {})
        self.assertEqual(answer["headers"]["location"], "/app")


class FormPostTest(unittest.TestCase):
    def test_sign_up_stores_a_hash_and_starts_a_session(self):
        ctx = context()
        answer = post(ctx, "/sign-up", {"username": " Ada ", "password": "correct horse"})
        self.assertEqual(answer["statusCode"], 303, answer.get("body"))
        self.assertEqual(answer["headers"]["location"], "/function/py-web-form")
        cookie = answer["cookies"][0]
        self.assertTrue(cookie.startswith("session=ada."), cookie)
        self.assertIn("; Max-Age=3600; Path=/; HttpOnly; SameSite=Lax", cookie)
        self.assertNotIn("Secure", cookie)
        record = json.loads(ctx.kv["user/ada"])
        self.assertTrue(record["hash"].startswith("$scrypt$"), record)
        self.assertNotIn(b"correct horse", ctx.kv["user/ada"])
        page = app.handler(request("GET", "/", {"cookie": session_of(answer)}), ctx)
        self.assertIn("Signed in as <strong>ada</strong>", page["body"])

    def test_sign_in_checks_the_password_and_says_the_same_for_an_unknown_name(self):
        ctx = context()
        post(ctx, "/sign-up", {"username": "ada", "password": "correct horse"})
        answer = post(ctx, "/sign-in", {"username": "ADA", "password": "correct horse"})
        self.assertEqual(answer["statusCode"], 303)
        self.assertTrue(answer["cookies"][0].startswith("session=ada."))
        wrong = post(ctx, "/sign-in", {"username": "ada", "password": "wrong horse"})
        unknown = post(ctx, "/sign-in", {"username": "nobody", "password": "wrong horse"})
        invalid = post(ctx, "/sign-in", {"username": "../x", "password": "wrong horse"})
        for answer in (wrong, unknown, invalid):
            self.assertEqual(answer["statusCode"], 401)
            self.assertIn("Wrong user name or password.", answer["body"])
            self.assertEqual(answer["cookies"], [])

    def test_bad_sign_ups_are_refused_with_the_form_again(self):
        ctx = context()
        post(ctx, "/sign-up", {"username": "ada", "password": "correct horse"})
        cases = [
            ({"username": "ada", "password": "other password"}, 409, "already taken"),
            ({"username": "a!", "password": "correct horse"}, 400, "3 to 32"),
            ({"username": "bob", "password": "short"}, 400, "8 to 128"),
            ({"username": "bob", "password": "x" * 129}, 400, "8 to 128"),
            ({"username": "bob"}, 400, "Both fields"),
        ]
        for fields, status, message in cases:
            answer = post(ctx, "/sign-up", fields)
            self.assertEqual(answer["statusCode"], status, fields)
            self.assertIn(message, answer["body"])
            self.assertEqual(answer["cookies"], [])
        self.assertEqual(sorted(ctx.kv), ["user/ada"])

    def test_a_post_that_is_not_a_form_is_refused(self):
        ctx = context()
        body = json.dumps({"username": "ada", "password": "correct horse"})
        headers = {"content-type": "application/json"}
        answer = app.handler(request("POST", "/sign-up", headers, body), ctx)
        self.assertEqual(answer["statusCode"], 415)
        self.assertEqual(ctx.kv, {})

    def test_sign_out_clears_the_cookie(self):
        answer = post(context(), "/sign-out", {})
        self.assertEqual(answer["statusCode"], 303)
        self.assertEqual(answer["cookies"], ["session=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax"])

    def test_secure_cookies_adds_secure(self):
        ctx = Context(config={"secure_cookies": True}, secrets={"SESSION_SECRET": SECRET})
        answer = post(ctx, "/sign-up", {"username": "ada", "password": "correct horse"})
        self.assertTrue(answer["cookies"][0].endswith("; SameSite=Lax; Secure"))
        self.assertIn("; Max-Age=86400;", answer["cookies"][0])


if __name__ == "__main__":
    unittest.main()
