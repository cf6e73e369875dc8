"""Unit tests of app.py: `squall test functions/examples/python-hello`."""

import unittest

from squall.testing import Context

import app


class HandlerTest(unittest.TestCase):
    def test_greets_the_given_name_with_the_configured_word(self):
        ctx = Context(config={"greeting": "Ahoy"})
        self.assertEqual(app.handler({"name": "Ada"}, ctx), {"greeting": "Ahoy, Ada!", "visits": 1})

    def test_greets_the_world_without_a_name(self):
        ctx = Context(config={"greeting": "Hello"})
        for event in (None, {}, {"name": ""}, {"name": "  "}, {"name": 7}, [1, 2]):
            self.assertEqual(app.handler(event, ctx)["greeting"], "Hello, world!", event)

    def test_the_greeting_word_defaults_to_hello(self):
        self.assertEqual(app.handler({"name": "Ada"}, Context())["greeting"], "Hello, Ada!")

    def test_each_name_has_its_own_visit_counter_in_state(self):
        ctx = Context()
        names = ("Ada", "Ada", "Bob", "Ada")
        visits = [app.handler({"name": name}, ctx)["visits"] for name in names]
        self.assertEqual(visits, [1, 2, 1, 3])
        self.assertEqual(ctx.kv["visits/Ada"], b"3")
        self.assertEqual(ctx.kv["visits/Bob"], b"1")

    def test_each_greeting_is_logged(self):
        ctx = Context()
        app.handler({"name": "Ada"}, ctx)
        self.assertIn(("INFO", "hello: greeting Ada (visit 1)"), ctx.logs)

    def test_names_outside_the_key_alphabet_are_escaped_and_kept_apart(self):
        self.assertEqual(app.visits_key("Zoë Ng"), "visits/Zo=C3=AB=20Ng")
        self.assertEqual(app.visits_key("a=20"), "visits/a=3D20")
        self.assertNotEqual(app.visits_key("a b"), app.visits_key("a=20b"))
        ctx = Context()
        self.assertEqual(app.handler({"name": "Zoë Ng"}, ctx)["visits"], 1)
        self.assertEqual(app.handler({"name": "Zoë/Ng"}, ctx)["visits"], 1)

    def test_a_name_too_long_for_a_state_key_is_refused(self):
        ctx = Context()
        longest = "é" * (app.MAX_NAME_BYTES // 2)
        self.assertEqual(app.handler({"name": longest}, ctx)["visits"], 1)
        with self.assertRaises(ValueError):
            app.handler({"name": longest + "x"}, ctx)
        self.assertEqual(len(ctx.kv), 1)


if __name__ == "__main__":
    unittest.main()
