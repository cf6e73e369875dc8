//! `squall schedule`, `squall trigger` and `squall fleet`, with their human and `--json` outputs.

use crate::api_client::ApiClient;
use crate::args::{ScheduleCommand, TriggerCommand};
use crate::commands::print_json;
use anyhow::Context as _;
use reqwest::Method;
use serde_json::Value;

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    }
}

/// The `squall schedule ls` table.
pub fn schedule_table(list: &Value) -> String {
    let items = list["schedules"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        return "no schedules\n".to_string();
    }
    let mut out = format!(
        "{:<20}  {:<20}  {:<18}  {:<16}  {}\n",
        "NAME", "FUNCTION", "CRON", "TIMEZONE", "NEXT"
    );
    for s in items {
        out.push_str(&format!(
            "{:<20}  {:<20}  {:<18}  {:<16}  {}\n",
            text(&s["name"]),
            text(&s["function"]),
            text(&s["cron"]),
            text(&s["timezone"]),
            text(&s["next"][0]),
        ));
    }
    out
}

/// The `squall trigger ls` table.
pub fn trigger_table(list: &Value) -> String {
    let items = list["triggers"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        return "no triggers\n".to_string();
    }
    let mut out = format!(
        "{:<20}  {:<20}  {:<8}  {}\n",
        "NAME", "FUNCTION", "KIND", "BINDS"
    );
    for t in items {
        let binds = match t["kind"].as_str() {
            Some("kv") => format!("bucket {} key {}", text(&t["bucket"]), text(&t["key"])),
            _ => text(&t["subject"]),
        };
        out.push_str(&format!(
            "{:<20}  {:<20}  {:<8}  {}\n",
            text(&t["name"]),
            text(&t["function"]),
            text(&t["kind"]),
            binds
        ));
    }
    out
}

/// The `squall fleet` text.
pub fn fleet_text(fleet: &Value) -> String {
    let mut out = String::new();
    let supervisors = fleet["supervisors"].as_array().cloned().unwrap_or_default();
    if supervisors.is_empty() {
        out.push_str("no fleet supervisors\n");
    }
    for s in supervisors {
        out.push_str(&format!(
            "supervisor {} (min {}, max {}): {} workers, wants {}\n",
            text(&s["id"]),
            text(&s["min"]),
            text(&s["max"]),
            s["workers"].as_array().map_or(0, Vec::len),
            text(&s["desired"]),
        ));
    }
    let workers = fleet["workers"].as_array().cloned().unwrap_or_default();
    out.push_str(&format!("{} worker processes\n", workers.len()));
    for w in workers {
        out.push_str(&format!(
            "  {}  {} in flight\n",
            text(&w["id"]),
            text(&w["in_flight"])
        ));
    }
    let functions = fleet["functions"].as_array().cloned().unwrap_or_default();
    if !functions.is_empty() {
        out.push_str(&format!(
            "{:<20}  {:>8}  {:>9}\n",
            "FUNCTION", "BACKLOG", "IN FLIGHT"
        ));
        for f in functions {
            out.push_str(&format!(
                "{:<20}  {:>8}  {:>9}\n",
                text(&f["name"]),
                text(&f["backlog"]),
                text(&f["in_flight"])
            ));
        }
    }
    out
}

/// `squall schedule set|ls|rm`.
pub async fn schedule(
    client: &ApiClient,
    json: bool,
    command: &ScheduleCommand,
) -> anyhow::Result<()> {
    match command {
        ScheduleCommand::Set {
            name,
            function,
            cron,
            timezone,
            payload,
        } => {
            let mut body = serde_json::json!({ "function": function, "cron": cron });
            if let Some(tz) = timezone {
                body["timezone"] = tz.as_str().into();
            }
            if let Some(payload) = payload {
                body["payload"] = serde_json::from_str(payload)
                    .context("--payload must be JSON (quote a string: '\"text\"')")?;
            }
            let view = client
                .json(
                    client
                        .request(Method::PUT, &["v1", "schedules", name])
                        .json(&body),
                )
                .await?;
            if json {
                return print_json(&view);
            }
            println!(
                "schedule {name} set: {} ({})",
                text(&view["cron"]),
                text(&view["timezone"])
            );
            for next in view["next"].as_array().into_iter().flatten() {
                println!("  next {}", text(next));
            }
        }
        ScheduleCommand::Ls => {
            let list = client
                .json(client.request(Method::GET, &["v1", "schedules"]))
                .await?;
            if json {
                return print_json(&list);
            }
            print!("{}", schedule_table(&list));
        }
        ScheduleCommand::Rm { name } => {
            client
                .send(client.request(Method::DELETE, &["v1", "schedules", name]))
                .await?;
            if json {
                return print_json(&serde_json::json!({ "deleted": name }));
            }
            println!("schedule {name} deleted");
        }
    }
    Ok(())
}

/// `squall trigger set|ls|rm`.
pub async fn trigger(
    client: &ApiClient,
    json: bool,
    command: &TriggerCommand,
) -> anyhow::Result<()> {
    match command {
        TriggerCommand::Set {
            name,
            function,
            subject,
            bucket,
            key,
        } => {
            let mut body = serde_json::json!({ "function": function });
            for (field, value) in [("subject", subject), ("bucket", bucket), ("key", key)] {
                if let Some(value) = value {
                    body[field] = value.as_str().into();
                }
            }
            let view = client
                .json(
                    client
                        .request(Method::PUT, &["v1", "triggers", name])
                        .json(&body),
                )
                .await?;
            if json {
                return print_json(&view);
            }
            println!("trigger {name} set");
        }
        TriggerCommand::Ls => {
            let list = client
                .json(client.request(Method::GET, &["v1", "triggers"]))
                .await?;
            if json {
                return print_json(&list);
            }
            print!("{}", trigger_table(&list));
        }
        TriggerCommand::Rm { name } => {
            client
                .send(client.request(Method::DELETE, &["v1", "triggers", name]))
                .await?;
            if json {
                return print_json(&serde_json::json!({ "deleted": name }));
            }
            println!("trigger {name} deleted");
        }
    }
    Ok(())
}

/// `squall fleet`.
pub async fn fleet(client: &ApiClient, json: bool) -> anyhow::Result<()> {
    let view = client
        .json(client.request(Method::GET, &["v1", "fleet"]))
        .await?;
    if json {
        return print_json(&view);
    }
    print!("{}", fleet_text(&view));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_show_bindings_and_next_fires() {
        let schedules = serde_json::json!({"schedules": [{"name": "n", "function": "f",
            "cron": "0 0 3 * * *", "timezone": "UTC", "next": ["2026-01-01T03:00:00Z"]}]});
        assert!(schedule_table(&schedules).contains("2026-01-01T03:00:00Z"));
        let triggers = serde_json::json!({"triggers": [{"name": "t", "function": "f",
            "kind": "kv", "bucket": "config", "key": "app.*"}]});
        assert!(trigger_table(&triggers).contains("bucket config key app.*"));
        let fleet = serde_json::json!({"supervisors": [{"id": "h-1", "min": 0, "max": 3,
            "workers": [10, 11], "desired": 2}], "workers": [], "functions": []});
        assert!(fleet_text(&fleet).contains("h-1 (min 0, max 3): 2 workers, wants 2"));
    }
}
