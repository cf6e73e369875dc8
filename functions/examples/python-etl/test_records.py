"""Unit tests of the transform stage: `squall test functions/examples/python-etl`."""

import json
import unittest

import squall
from squall.testing import Context

import records
import transform


class RecordsTest(unittest.TestCase):
    def line(self, text):
        return {"line": 7, "text": text}

    def test_a_messy_line_is_normalised(self):
        record = records.transform(
            self.line(' o-1 ,"Lovelace,  Ada", ADA@Example.com ,12.5, eur ,02.01.2026')
        )
        self.assertEqual(record["customer"], "Lovelace, Ada")
        self.assertEqual(record["email"], "ada@example.com")
        self.assertEqual(record["amount_cents"], 1250)
        self.assertEqual(record["currency"], "EUR")
        self.assertEqual(record["date"], "2026-01-02")

    def test_bad_lines_say_why(self):
        cases = {
            "o1,Ada,ada@example.com,12.00,EUR": "expected 6 fields",
            "o 1,Ada,ada@example.com,12.00,EUR,2026-01-02": "invalid order_id",
            "o1,Ada,ada@example.com,12.,EUR,2026-01-02": "invalid amount",
            "o1,Ada,ada@example.com,1,XYZ,2026-01-02": "unknown currency",
            "o1,Ada,ada@example.com,1,EUR,2026-02-30": "invalid date",
            'o1,"Ada,ada@example.com,1,EUR,2026-01-02': "unterminated quote",
        }
        for text, reason in cases.items():
            with self.assertRaises(records.Invalid) as caught:
                records.transform(self.line(text))
            self.assertIn(reason, str(caught.exception), text)


class HandlerTest(unittest.TestCase):
    def test_a_batch_is_split_into_records_and_rejected_rows(self):
        ctx = Context()
        event = {
            "upload": "u1",
            "batch": 0,
            "items": [
                {"line": 2, "text": "o1,Ada,ada@example.com,1.00,EUR,2026-01-02"},
                {"line": 3, "text": "o2,Ada,nope,1.00,EUR,2026-01-02"},
            ],
        }
        self.assertEqual(transform.handler(event, ctx), {"records": 1, "rejected": 1})
        subjects = [subject for subject, _ in ctx.published]
        self.assertEqual(subjects, [transform.TRANSFORMED, transform.REJECTED])
        rejected = json.loads(ctx.published[1][1])
        self.assertEqual(rejected["items"][0]["line"], 3)

    def test_the_retry_marker_retries_the_first_attempt_after_publishing(self):
        ctx = Context()
        event = {
            "upload": "u1",
            "batch": 1,
            "items": [{"line": 2, "text": "o1,retry-transform,a@b.co,1,EUR,2026-01-02"}],
        }
        with self.assertRaises(squall.Retry):
            transform.handler(event, ctx)
        self.assertEqual(len(ctx.published), 1)


if __name__ == "__main__":
    unittest.main()
