//! `squall invocations`, `squall stats` and `squall usage`: the query index, as tables.

use crate::api_client::ApiClient;
use crate::args::{InvocationsArgs, StatsArgs, UsageArgs};
use crate::render::or_dash;
use reqwest::Method;
use squall_api::queries::{FunctionStats, GroupBy, InvocationPage, Usage, UsageReport};

/// Milliseconds with two decimals.
fn ms(value: f64) -> String {
    format!("{value:.2}")
}

/// The `squall invocations` table, with the next page's cursor under it.
pub fn invocation_table(page: &InvocationPage) -> String {
    if page.items.is_empty() {
        return "no invocations\n".to_string();
    }
    let mut out = format!(
        "{:<36}  {:<20}  {:<13}  {:>8}  {:>10}  {}\n",
        "ID", "FUNCTION", "STATUS", "ATTEMPTS", "DURATION", "CREATED AT"
    );
    for item in &page.items {
        out.push_str(&format!(
            "{:<36}  {:<20}  {:<13}  {:>8}  {:>8}ms  {}\n",
            item.invocation_id,
            item.function,
            item.status.as_str(),
            item.attempts,
            ms(item.duration_ms),
            item.created_at,
        ));
    }
    if let Some(cursor) = &page.next_cursor {
        out.push_str(&format!("more: --cursor {cursor}\n"));
    }
    out
}

/// The line that says an answer may be partial, when the index is still catching up.
fn catching_up_note(catching_up: bool, applied_sequence: u64) -> String {
    if catching_up {
        format!("note: the query index is still catching up with RESULTS (at sequence {applied_sequence}); this answer may be partial\n")
    } else {
        String::new()
    }
}

/// The `squall stats` text.
pub fn stats_text(stats: &FunctionStats) -> String {
    catching_up_note(stats.catching_up, stats.applied_sequence) + &format!(
        "function     {}\nwindow       {} .. {}\ninvocations  {} ({} succeeded, {} errors, {} in progress)\nerror rate   {:.1}%\nduration     p50 {}ms  p95 {}ms  p99 {}ms\n",
        stats.function,
        stats.since,
        stats.until,
        stats.count,
        stats.succeeded,
        stats.errors,
        stats.in_progress,
        stats.error_rate * 100.0,
        or_dash(stats.p50_ms.map(ms)),
        or_dash(stats.p95_ms.map(ms)),
        or_dash(stats.p99_ms.map(ms)),
    )
}

/// The `squall usage` table, with a total row.
pub fn usage_table(usage: &UsageReport) -> String {
    let group = match usage.group_by {
        GroupBy::Hour => "hour",
        GroupBy::Function => "function",
    };
    let mut out = format!(
        "{:<24}  {:>11}  {:>8}  {:>12}  {:>12}  {:>12}\n",
        group.to_uppercase(),
        "INVOCATIONS",
        "ATTEMPTS",
        "CPU-MS",
        "WALL-MS",
        "GB-S"
    );
    let row = |name: String, u: &Usage| {
        format!(
            "{:<24}  {:>11}  {:>8}  {:>12}  {:>12}  {:>12.6}\n",
            name,
            u.invocations,
            u.attempts,
            ms(u.cpu_ms),
            ms(u.wall_ms),
            u.gb_s
        )
    };
    for u in &usage.groups {
        let name = match usage.group_by {
            GroupBy::Hour => &u.hour,
            GroupBy::Function => &u.function,
        };
        out.push_str(&row(or_dash(name.as_deref()), &u.usage));
    }
    out.push_str(&row("total".into(), &usage.total));
    out + &catching_up_note(usage.catching_up, usage.applied_sequence)
}

/// `squall invocations`.
pub async fn invocations(
    client: &ApiClient,
    json: bool,
    args: &InvocationsArgs,
) -> anyhow::Result<()> {
    let mut query = vec![("limit", args.limit.to_string())];
    for (key, value) in [
        ("function", &args.function),
        ("status", &args.status),
        ("since", &args.since),
        ("until", &args.until),
        ("cursor", &args.cursor),
    ] {
        if let Some(value) = value {
            query.push((key, value.clone()));
        }
    }
    let answer = client
        .answer(
            client
                .request(Method::GET, &["v1", "invocations"])
                .query(&query),
        )
        .await?;
    if json {
        return answer.print();
    }
    print!("{}", invocation_table(&answer.decode()?));
    Ok(())
}

/// `squall stats <fn>`.
pub async fn stats(client: &ApiClient, json: bool, args: &StatsArgs) -> anyhow::Result<()> {
    let answer = client
        .answer(
            client
                .request(Method::GET, &["v1", "functions", &args.name, "stats"])
                .query(&[("window", args.window.to_string())]),
        )
        .await?;
    if json {
        return answer.print();
    }
    print!("{}", stats_text(&answer.decode()?));
    Ok(())
}

/// `squall usage`.
pub async fn usage(client: &ApiClient, json: bool, args: &UsageArgs) -> anyhow::Result<()> {
    let mut query = vec![("group_by", args.group_by.clone())];
    for (key, value) in [("since", &args.since), ("until", &args.until)] {
        if let Some(value) = value {
            query.push((key, value.clone()));
        }
    }
    let answer = client
        .answer(client.request(Method::GET, &["v1", "usage"]).query(&query))
        .await?;
    if json {
        return answer.print();
    }
    print!("{}", usage_table(&answer.decode()?));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_full_page_prints_the_next_cursor() {
        let page: InvocationPage = serde_json::from_value(json!({
            "items": [{ "invocation_id": "i", "function": "f", "version": "sha256:00",
                        "status": "succeeded", "attempts": 1, "error_kind": null,
                        "created_at": "t", "finished_at": "u", "duration_ms": 1.5,
                        "cpu_ms": 1.0, "wall_ms": 1.5 }],
            "next_cursor": "abc"
        }))
        .unwrap();
        let table = invocation_table(&page);
        assert!(table.contains("succeeded"));
        assert!(table.contains("1.50ms"));
        assert!(table.ends_with("more: --cursor abc\n"));
        let last = InvocationPage {
            items: vec![],
            next_cursor: None,
            catching_up: false,
            applied_sequence: 0,
        };
        assert_eq!(invocation_table(&last), "no invocations\n");
    }

    #[test]
    fn stats_without_invocations_show_dashes_for_percentiles() {
        let stats: FunctionStats = serde_json::from_value(json!({
            "function": "f", "since": "s", "until": "now", "count": 4, "succeeded": 3,
            "errors": 1, "error_rate": 0.25, "in_progress": 0,
            "p50_ms": 2.0, "p95_ms": null, "p99_ms": null
        }))
        .unwrap();
        let text = stats_text(&stats);
        assert!(
            text.contains("invocations  4 (3 succeeded, 1 errors, 0 in progress)\n"),
            "{text}"
        );
        assert!(text.contains("error rate   25.0%\n"), "{text}");
        assert!(text.ends_with("p50 2.00ms  p95 -ms  p99 -ms\n"), "{text}");
    }

    #[test]
    fn usage_ends_with_the_total() {
        let usage: UsageReport = serde_json::from_value(json!({
            "group_by": "hour", "since": "s", "until": "u",
            "groups": [{ "hour": "2026-01-01T00:00:00Z", "invocations": 2, "attempts": 3,
                         "cpu_ms": 1.0, "wall_ms": 2.0 }],
            "total": { "invocations": 2, "attempts": 3, "cpu_ms": 1.0, "wall_ms": 2.0 }
        }))
        .unwrap();
        let table = usage_table(&usage);
        assert!(table.starts_with("HOUR"));
        assert!(table.contains("2026-01-01T00:00:00Z"));
        assert!(table.lines().last().unwrap().starts_with("total"));
    }
}
