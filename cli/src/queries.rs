//! `squall invocations`, `squall stats` and `squall usage`: the query index, as tables.

use crate::api_client::ApiClient;
use crate::args::{InvocationsArgs, StatsArgs, UsageArgs};
use crate::commands::print_json;
use reqwest::Method;
use serde_json::Value;

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    }
}

fn ms(value: &Value) -> String {
    value
        .as_f64()
        .map(|v| format!("{v:.2}"))
        .unwrap_or_else(|| "-".into())
}

/// The `squall invocations` table, with the next page's cursor under it.
pub fn invocation_table(page: &Value) -> String {
    let items = page["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        return "no invocations\n".to_string();
    }
    let mut out = format!(
        "{:<36}  {:<20}  {:<13}  {:>8}  {:>10}  {}\n",
        "ID", "FUNCTION", "STATUS", "ATTEMPTS", "DURATION", "CREATED AT"
    );
    for item in items {
        out.push_str(&format!(
            "{:<36}  {:<20}  {:<13}  {:>8}  {:>8}ms  {}\n",
            text(&item["invocation_id"]),
            text(&item["function"]),
            text(&item["status"]),
            text(&item["attempts"]),
            ms(&item["duration_ms"]),
            text(&item["created_at"]),
        ));
    }
    if let Some(cursor) = page["next_cursor"].as_str() {
        out.push_str(&format!("more: --cursor {cursor}\n"));
    }
    out
}

/// The `squall stats` text.
pub fn stats_text(stats: &Value) -> String {
    format!(
        "function     {}\nwindow       {} .. {}\ninvocations  {} ({} succeeded, {} errors, {} in progress)\nerror rate   {:.1}%\nduration     p50 {}ms  p95 {}ms  p99 {}ms\n",
        text(&stats["function"]),
        text(&stats["since"]),
        text(&stats["until"]),
        text(&stats["count"]),
        text(&stats["succeeded"]),
        text(&stats["errors"]),
        text(&stats["in_progress"]),
        stats["error_rate"].as_f64().unwrap_or(0.0) * 100.0,
        ms(&stats["p50_ms"]),
        ms(&stats["p95_ms"]),
        ms(&stats["p99_ms"]),
    )
}

/// The `squall usage` table, with a total row.
pub fn usage_table(usage: &Value) -> String {
    let group = if usage["group_by"] == "hour" {
        "hour"
    } else {
        "function"
    };
    let mut out = format!(
        "{:<24}  {:>11}  {:>8}  {:>12}  {:>12}\n",
        group.to_uppercase(),
        "INVOCATIONS",
        "ATTEMPTS",
        "CPU-MS",
        "WALL-MS"
    );
    let row = |name: String, u: &Value| {
        format!(
            "{:<24}  {:>11}  {:>8}  {:>12}  {:>12}\n",
            name,
            text(&u["invocations"]),
            text(&u["attempts"]),
            ms(&u["cpu_ms"]),
            ms(&u["wall_ms"])
        )
    };
    for u in usage["groups"].as_array().cloned().unwrap_or_default() {
        out.push_str(&row(text(&u[group]), &u));
    }
    out.push_str(&row("total".into(), &usage["total"]));
    out
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
    let page = client
        .json(
            client
                .request(Method::GET, &["v1", "invocations"])
                .query(&query),
        )
        .await?;
    if json {
        return print_json(&page);
    }
    print!("{}", invocation_table(&page));
    Ok(())
}

/// `squall stats <fn>`.
pub async fn stats(client: &ApiClient, json: bool, args: &StatsArgs) -> anyhow::Result<()> {
    let stats = client
        .json(
            client
                .request(Method::GET, &["v1", "functions", &args.name, "stats"])
                .query(&[("window", args.window.to_string())]),
        )
        .await?;
    if json {
        return print_json(&stats);
    }
    print!("{}", stats_text(&stats));
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
    let usage = client
        .json(client.request(Method::GET, &["v1", "usage"]).query(&query))
        .await?;
    if json {
        return print_json(&usage);
    }
    print!("{}", usage_table(&usage));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_page_prints_the_next_cursor() {
        let page = serde_json::json!({
            "items": [{ "invocation_id": "i", "function": "f", "status": "succeeded",
                        "attempts": 1, "duration_ms": 1.5, "created_at": "t" }],
            "next_cursor": "abc"
        });
        let table = invocation_table(&page);
        assert!(table.contains("succeeded"));
        assert!(table.contains("1.50ms"));
        assert!(table.ends_with("more: --cursor abc\n"));
    }

    #[test]
    fn usage_ends_with_the_total() {
        let usage = serde_json::json!({
            "group_by": "hour",
            "groups": [{ "hour": "2026-01-01T00:00:00Z", "invocations": 2, "attempts": 3,
                         "cpu_ms": 1.0, "wall_ms": 2.0 }],
            "total": { "invocations": 2, "attempts": 3, "cpu_ms": 1.0, "wall_ms": 2.0 }
        });
        let table = usage_table(&usage);
        assert!(table.starts_with("HOUR"));
        assert!(table.contains("2026-01-01T00:00:00Z"));
        assert!(table.lines().last().unwrap().starts_with("total"));
    }
}
