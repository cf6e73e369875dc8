"""The order records of the etl pipeline: one CSV line validated and normalised, or the reason
it is not a record. Pure code, tested without a host (test_records.py)."""

import re

CURRENCIES = ("EUR", "USD", "GBP", "JPY")
_ORDER_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")


class Invalid(ValueError):
    """A line that is not a valid record; the message says why."""


def split_csv(text):
    """The fields of one CSV line: a field may be quoted, with commas and doubled quotes inside."""
    fields, field = [], []
    quoted, at_start, i = False, True, 0
    while i < len(text):
        c = text[i]
        if not quoted and c == '"':
            if not at_start:
                raise Invalid("a quote inside an unquoted field")
            quoted = True
        elif quoted and c == '"':
            if text[i + 1 : i + 2] == '"':
                field.append('"')
                i += 1
            else:
                quoted = False
                if i + 1 < len(text) and text[i + 1] != ",":
                    raise Invalid("text after a closing quote")
        elif not quoted and c == ",":
            fields.append("".join(field))
            field, at_start, i = [], True, i + 1
            continue
        else:
            field.append(c)
        at_start = False
        i += 1
    if quoted:
        raise Invalid("an unterminated quote")
    fields.append("".join(field))
    return fields


def _valid_email(email):
    local, at, domain = email.partition("@")
    return (
        bool(at)
        and bool(local)
        and "@" not in domain
        and "." in domain
        and not domain.startswith(".")
        and not domain.endswith(".")
        and not any(c.isspace() for c in email)
    )


def parse_cents(text):
    """An amount with at most two decimals, in cents."""
    whole, dot, fraction = text.partition(".")
    ok = (
        whole.isascii()
        and whole.isdigit()
        and len(whole) <= 12
        and len(fraction) <= 2
        and (not fraction or (fraction.isascii() and fraction.isdigit()))
        and not (dot and not fraction)
    )
    if not ok:
        raise Invalid(f"invalid amount `{text}`")
    return int(whole) * 100 + int(fraction.ljust(2, "0"))


def normalise_date(text):
    """`YYYY-MM-DD` from `YYYY-MM-DD`, `YYYY/MM/DD` or `DD.MM.YYYY`."""
    parts = re.split(r"[-/.]", text)
    invalid = Invalid(f"invalid date `{text}`")
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() for p in parts):
        raise invalid
    if "." in text and len(parts[0]) == 2 and len(parts[2]) == 4:
        y, m, d = parts[2], parts[1], parts[0]
    elif "." not in text and len(parts[0]) == 4 and len(parts[2]) == 2 and not (
        "-" in text and "/" in text
    ):
        y, m, d = parts
    else:
        raise invalid
    if len(m) != 2 or len(d) != 2:
        raise invalid
    year, month, day = int(y), int(m), int(d)
    leap = (year % 4 == 0 and year % 100 != 0) or year % 400 == 0
    days = {1: 31, 3: 31, 5: 31, 7: 31, 8: 31, 10: 31, 12: 31, 4: 30, 6: 30, 9: 30, 11: 30}
    days[2] = 29 if leap else 28
    if month not in days or not 1900 <= year <= 2100 or not 1 <= day <= days[month]:
        raise invalid
    return f"{year:04}-{month:02}-{day:02}"


def transform(line):
    """The record of `line` (`{"line": n, "text": "..."}`), or Invalid."""
    fields = split_csv(line["text"])
    if len(fields) != 6:
        raise Invalid(f"expected 6 fields, found {len(fields)}")
    order_id = fields[0].strip()
    if not _ORDER_ID.fullmatch(order_id):
        raise Invalid(f"invalid order_id `{order_id}`")
    customer = " ".join(fields[1].split())
    if not customer:
        raise Invalid("empty customer")
    email = fields[2].strip().lower()
    if not _valid_email(email):
        raise Invalid(f"invalid email `{email}`")
    amount_cents = parse_cents(fields[3].strip())
    currency = fields[4].strip().upper()
    if currency not in CURRENCIES:
        raise Invalid(f"unknown currency `{currency}`")
    return {
        "line": line["line"],
        "order_id": order_id,
        "customer": customer,
        "email": email,
        "amount_cents": amount_cents,
        "currency": currency,
        "date": normalise_date(fields[5].strip()),
    }


def transform_all(lines):
    """(records, rejected rows) of a batch's lines, in order."""
    good, bad = [], []
    for line in lines:
        try:
            good.append(transform(line))
        except Invalid as reason:
            bad.append({"line": line["line"], "reason": str(reason), "text": line["text"]})
    return good, bad
