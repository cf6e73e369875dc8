"""Unit tests for app.py: `squall test` runs them, and so does `python3 -m unittest`."""

import unittest

from squall.testing import Context

import app


class HandlerTest(unittest.TestCase):
    def test_greets_by_name(self):
        ctx = Context(config={}, secrets={})
        self.assertEqual(app.handler({"name": "Ada"}, ctx), {"message": "Hello, Ada!"})
        self.assertIn(("INFO", "greeting Ada"), ctx.logs)

    def test_greets_the_world_without_a_name(self):
        self.assertEqual(app.handler({}, Context()), {"message": "Hello, world!"})


if __name__ == "__main__":
    unittest.main()
