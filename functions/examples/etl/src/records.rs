//! The pipeline's data: CSV lines with their numbers, the validation and normalisation of one
//! order record, and the batches the stages hand on. Pure code, tested without a host.

use serde::{Deserialize, Serialize};

/// The header an upload must start with.
pub const HEADER: &str = "order_id,customer,email,amount,currency,date";
/// The currencies a record may carry.
pub const CURRENCIES: [&str; 4] = ["EUR", "USD", "GBP", "JPY"];

/// A batch of items of one upload, as published on an `events.etl.*` subject.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch<T> {
    /// The extract invocation's id.
    pub upload: String,
    /// The batch's number within the upload, from 0.
    pub batch: usize,
    pub items: Vec<T>,
}

impl<T> Batch<T> {
    /// The same upload and batch number with other items.
    pub fn with<U>(&self, items: Vec<U>) -> Batch<U> {
        Batch {
            upload: self.upload.clone(),
            batch: self.batch,
            items,
        }
    }
}

/// One line of the upload, with its 1-based line number in the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    pub line: u64,
    pub text: String,
}

/// A valid, normalised order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub line: u64,
    pub order_id: String,
    /// Trimmed, inner whitespace collapsed to one space.
    pub customer: String,
    /// Trimmed and lowercased.
    pub email: String,
    pub amount_cents: i64,
    /// Upper case, one of `CURRENCIES`.
    pub currency: String,
    /// `YYYY-MM-DD`.
    pub date: String,
}

/// A line that is not a valid record, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rejected {
    pub line: u64,
    pub reason: String,
    pub text: String,
}

/// The data lines of an upload, numbered as in the file (the header is line 1). Blank lines
/// are not records and are skipped; anything else is passed on, however malformed.
pub fn numbered_lines(text: &str) -> Result<Vec<Line>, String> {
    let mut lines = text.lines().enumerate();
    let header = lines
        .next()
        .map(|(_, h)| h.trim_start_matches('\u{feff}').trim())
        .unwrap_or_default();
    if header != HEADER {
        return Err(format!("the header must be `{HEADER}`, found `{header}`"));
    }
    Ok(lines
        .filter(|(_, text)| !text.trim().is_empty())
        .map(|(i, text)| Line {
            line: i as u64 + 1,
            text: text.trim_end_matches('\r').to_string(),
        })
        .collect())
}

/// Splits the items into valid records and rejected lines, keeping their order.
pub fn transform_all(lines: &[Line]) -> (Vec<Record>, Vec<Rejected>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for line in lines {
        match transform(line) {
            Ok(record) => good.push(record),
            Err(reason) => bad.push(Rejected {
                line: line.line,
                reason,
                text: line.text.clone(),
            }),
        }
    }
    (good, bad)
}

/// Validates and normalises one line.
pub fn transform(line: &Line) -> Result<Record, String> {
    let fields = split_csv(&line.text)?;
    if fields.len() != 6 {
        return Err(format!("expected 6 fields, found {}", fields.len()));
    }
    let order_id = fields[0].trim();
    let id_ok = (1..=32).contains(&order_id.len())
        && order_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !id_ok {
        return Err(format!("invalid order_id `{order_id}`"));
    }
    let customer = fields[1].split_whitespace().collect::<Vec<_>>().join(" ");
    if customer.is_empty() {
        return Err("empty customer".into());
    }
    let email = fields[2].trim().to_lowercase();
    if !valid_email(&email) {
        return Err(format!("invalid email `{email}`"));
    }
    let amount_cents = parse_cents(fields[3].trim())?;
    let currency = fields[4].trim().to_uppercase();
    if !CURRENCIES.contains(&currency.as_str()) {
        return Err(format!("unknown currency `{currency}`"));
    }
    let date = normalise_date(fields[5].trim())?;
    Ok(Record {
        line: line.line,
        order_id: order_id.to_string(),
        customer,
        email,
        amount_cents,
        currency,
        date,
    })
}

/// Splits one CSV line: fields separated by commas, a field in double quotes may hold commas
/// and doubled quotes (`""`). Records do not span lines.
pub fn split_csv(text: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (false, '"') if at_start => quoted = true,
            (false, '"') => return Err("a quote inside an unquoted field".into()),
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => {
                quoted = false;
                if !matches!(chars.peek(), None | Some(',')) {
                    return Err("text after a closing quote".into());
                }
            }
            (false, ',') => {
                fields.push(std::mem::take(&mut field));
                at_start = true;
                continue;
            }
            (_, c) => field.push(c),
        }
        at_start = false;
    }
    if quoted {
        return Err("an unterminated quote".into());
    }
    fields.push(field);
    Ok(fields)
}

fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(char::is_whitespace)
}

/// `12`, `12.5` or `12.50` (at most two decimals, not negative, below 10^12) as cents.
pub fn parse_cents(text: &str) -> Result<i64, String> {
    let invalid = || format!("invalid amount `{text}`");
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if whole.is_empty() || whole.len() > 12 || !digits(whole) || fraction.len() > 2 {
        return Err(invalid());
    }
    if !digits(fraction) || (text.contains('.') && fraction.is_empty()) {
        return Err(invalid());
    }
    let whole: i64 = whole.parse().map_err(|_| invalid())?;
    let cents: i64 = format!("{fraction:0<2}").parse().map_err(|_| invalid())?;
    Ok(whole * 100 + cents)
}

/// `YYYY-MM-DD`, `YYYY/MM/DD` or `DD.MM.YYYY`, a real calendar day, as `YYYY-MM-DD`.
pub fn normalise_date(text: &str) -> Result<String, String> {
    let invalid = || format!("invalid date `{text}`");
    let parts: Vec<&str> = text.split(['-', '/', '.']).collect();
    if parts.len() != 3 || parts.iter().any(|p| !p.chars().all(|c| c.is_ascii_digit())) {
        return Err(invalid());
    }
    let (y, m, d) = match (text.contains('.'), parts[0].len(), parts[2].len()) {
        (true, 2, 4) => (parts[2], parts[1], parts[0]),
        (false, 4, 2) if !(text.contains('-') && text.contains('/')) => {
            (parts[0], parts[1], parts[2])
        }
        _ => return Err(invalid()),
    };
    if m.len() != 2 || d.len() != 2 {
        return Err(invalid());
    }
    let (year, month, day): (u32, u32, u32) = (
        y.parse().map_err(|_| invalid())?,
        m.parse().map_err(|_| invalid())?,
        d.parse().map_err(|_| invalid())?,
    );
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(invalid()),
    };
    if !(1900..=2100).contains(&year) || day == 0 || day > days {
        return Err(invalid());
    }
    Ok(format!("{year:04}-{month:02}-{day:02}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> Line {
        Line {
            line: 7,
            text: text.into(),
        }
    }

    #[test]
    fn a_messy_valid_line_is_normalised() {
        let record = transform(&line(
            r#" A-17 ,"  Smith,   Ada ", ADA@Example.COM ,12.5,eur,05.03.2026"#,
        ))
        .unwrap();
        assert_eq!(
            record,
            Record {
                line: 7,
                order_id: "A-17".into(),
                customer: "Smith, Ada".into(),
                email: "ada@example.com".into(),
                amount_cents: 1250,
                currency: "EUR".into(),
                date: "2026-03-05".into(),
            }
        );
        assert_eq!(
            transform(&line("b,c,c@d.io,3,usd,2026/12/31"))
                .unwrap()
                .date,
            "2026-12-31"
        );
    }

    #[test]
    fn each_bad_field_is_named_in_the_reason() {
        let cases = [
            ("a,b,c@d.io,1,EUR", "expected 6 fields, found 5"),
            ("a b,c,c@d.io,1,EUR,2026-01-01", "invalid order_id"),
            ("a,  ,c@d.io,1,EUR,2026-01-01", "empty customer"),
            ("a,b,not-an-email,1,EUR,2026-01-01", "invalid email"),
            ("a,b,c@d.io,-1,EUR,2026-01-01", "invalid amount"),
            ("a,b,c@d.io,1.234,EUR,2026-01-01", "invalid amount"),
            ("a,b,c@d.io,1.,EUR,2026-01-01", "invalid amount"),
            ("a,b,c@d.io,ten,EUR,2026-01-01", "invalid amount"),
            ("a,b,c@d.io,1,XYZ,2026-01-01", "unknown currency"),
            ("a,b,c@d.io,1,EUR,2026-02-30", "invalid date"),
            ("a,b,c@d.io,1,EUR,2025-02-29", "invalid date"),
            ("a,b,c@d.io,1,EUR,2026-13-01", "invalid date"),
            ("a,b,c@d.io,1,EUR,2026-01/01", "invalid date"),
            ("a,\"b,c@d.io,1,EUR,2026-01-01", "an unterminated quote"),
            ("a,b\"x,c@d.io,1,EUR,2026-01-01", "a quote inside"),
        ];
        for (text, reason) in cases {
            let err = transform(&line(text)).unwrap_err();
            assert!(err.contains(reason), "{text}: {err}");
        }
        assert!(transform(&line("a,b,c@d.io,1,EUR,2024-02-29")).is_ok());
    }

    #[test]
    fn lines_keep_their_numbers_in_the_file_and_blank_ones_are_skipped() {
        let text = format!("{HEADER}\r\nx1,a\r\n\r\nx2,b\n");
        let lines = numbered_lines(&text).unwrap();
        assert_eq!(lines, vec![line_at(2, "x1,a"), line_at(4, "x2,b")]);
        let err = numbered_lines("id,name\n1,a\n").unwrap_err();
        assert!(err.contains("the header must be"), "{err}");
    }

    fn line_at(n: u64, text: &str) -> Line {
        Line {
            line: n,
            text: text.into(),
        }
    }

    #[test]
    fn quoted_fields_hold_commas_and_doubled_quotes() {
        assert_eq!(
            split_csv(r#"1,"a, ""b""",c"#).unwrap(),
            vec!["1", r#"a, "b""#, "c"]
        );
        assert_eq!(split_csv("").unwrap(), vec![""]);
        assert_eq!(split_csv("a,").unwrap(), vec!["a", ""]);
    }
}
