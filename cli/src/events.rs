//! `squall schedule`, `squall trigger` and `squall fleet`, with their human and `--json` outputs.

use crate::api_client::ApiClient;
use crate::args::{ScheduleCommand, TriggerCommand};
use crate::commands::print_json;
use crate::render::or_dash;
use anyhow::Context as _;
use reqwest::Method;
use squall_api::operations::{
    Fleet, Schedule, ScheduleList, ScheduleRequest, Trigger, TriggerKind, TriggerList,
    TriggerRequest,
};

/// The `squall schedule ls` table.
pub fn schedule_table(list: &ScheduleList) -> String {
    if list.schedules.is_empty() {
        return "no schedules\n".to_string();
    }
    let mut out = format!(
        "{:<20}  {:<20}  {:<18}  {:<16}  {}\n",
        "NAME", "FUNCTION", "CRON", "TIMEZONE", "NEXT"
    );
    for s in &list.schedules {
        out.push_str(&format!(
            "{:<20}  {:<20}  {:<18}  {:<16}  {}\n",
            s.name,
            s.function,
            s.cron,
            s.timezone,
            or_dash(s.next.first()),
        ));
    }
    out
}

/// The API spelling of a trigger's kind.
fn kind_name(kind: TriggerKind) -> &'static str {
    match kind {
        TriggerKind::Subject => "subject",
        TriggerKind::Kv => "kv",
    }
}

/// The `squall trigger ls` table.
pub fn trigger_table(list: &TriggerList) -> String {
    if list.triggers.is_empty() {
        return "no triggers\n".to_string();
    }
    let mut out = format!(
        "{:<20}  {:<20}  {:<8}  {}\n",
        "NAME", "FUNCTION", "KIND", "BINDS"
    );
    for t in &list.triggers {
        let binds = match t.kind {
            TriggerKind::Kv => format!(
                "bucket {} key {}",
                or_dash(t.bucket.as_deref()),
                or_dash(t.key.as_deref())
            ),
            TriggerKind::Subject => or_dash(t.subject.as_deref()),
        };
        out.push_str(&format!(
            "{:<20}  {:<20}  {:<8}  {}\n",
            t.name,
            t.function,
            kind_name(t.kind),
            binds
        ));
    }
    out
}

/// The `squall fleet` text.
pub fn fleet_text(fleet: &Fleet) -> String {
    let mut out = String::new();
    if fleet.supervisors.is_empty() {
        out.push_str("no fleet supervisors\n");
    }
    for s in &fleet.supervisors {
        out.push_str(&format!(
            "supervisor {} (min {}, max {}): {} workers, wants {}\n",
            s.id,
            s.min,
            s.max,
            s.workers.len(),
            s.desired,
        ));
        for pool in &s.pools {
            out.push_str(&format!(
                "  pool {}: {} processes, wants {}\n",
                pool.function,
                pool.processes.len(),
                pool.desired
            ));
        }
    }
    out.push_str(&format!("{} worker processes\n", fleet.workers.len()));
    for w in &fleet.workers {
        out.push_str(&format!("  {}  {} in flight\n", w.id, w.in_flight));
        if let Some(c) = &w.confinement {
            out.push_str(&format!(
                "    memory {} MiB ({}), {} open files, {} call threads; sandbox {}\n",
                c.memory_mb, c.memory_via, c.open_files, c.call_threads, c.sandbox
            ));
            for f in &c.features {
                let state = if f.active { "on" } else { "off" };
                out.push_str(&format!("      {} {}: {}\n", f.name, state, f.detail));
            }
        }
    }
    if !fleet.functions.is_empty() {
        out.push_str(&format!(
            "{:<20}  {:>8}  {:>9}  {:>9}\n",
            "FUNCTION", "BACKLOG", "IN FLIGHT", "PROCESSES"
        ));
        for f in &fleet.functions {
            out.push_str(&format!(
                "{:<20}  {:>8}  {:>9}  {:>9}\n",
                f.name, f.backlog, f.in_flight, f.processes
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
            let payload = payload
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .context("--payload must be JSON (quote a string: '\"text\"')")?;
            let body = ScheduleRequest {
                function: function.clone(),
                cron: cron.clone(),
                timezone: timezone.clone(),
                payload,
            };
            let answer = client
                .answer(
                    client
                        .request(Method::PUT, &["v1", "schedules", name])
                        .json(&body),
                )
                .await?;
            if json {
                return answer.print();
            }
            let view: Schedule = answer.decode()?;
            println!("schedule {name} set: {} ({})", view.cron, view.timezone);
            for next in &view.next {
                println!("  next {next}");
            }
        }
        ScheduleCommand::Ls => {
            let answer = client
                .answer(client.request(Method::GET, &["v1", "schedules"]))
                .await?;
            if json {
                return answer.print();
            }
            print!("{}", schedule_table(&answer.decode()?));
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
            let body = TriggerRequest {
                function: function.clone(),
                subject: subject.clone(),
                bucket: bucket.clone(),
                key: key.clone(),
            };
            let answer = client
                .answer(
                    client
                        .request(Method::PUT, &["v1", "triggers", name])
                        .json(&body),
                )
                .await?;
            if json {
                return answer.print();
            }
            answer.decode::<Trigger>()?;
            println!("trigger {name} set");
        }
        TriggerCommand::Ls => {
            let answer = client
                .answer(client.request(Method::GET, &["v1", "triggers"]))
                .await?;
            if json {
                return answer.print();
            }
            print!("{}", trigger_table(&answer.decode()?));
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
    let answer = client
        .answer(client.request(Method::GET, &["v1", "fleet"]))
        .await?;
    if json {
        return answer.print();
    }
    print!("{}", fleet_text(&answer.decode()?));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_show_bindings_and_next_fires() {
        let schedules: ScheduleList = serde_json::from_value(json!({"schedules": [{
            "name": "n", "function": "f", "cron": "0 0 3 * * *", "timezone": "UTC",
            "payload": null, "subject": "squall.schedules.n",
            "next": ["2026-01-01T03:00:00Z"]}]}))
        .unwrap();
        assert!(schedule_table(&schedules).contains("2026-01-01T03:00:00Z"));
        let triggers: TriggerList = serde_json::from_value(json!({"triggers": [
            {"name": "t", "function": "f", "created_at": "c", "kind": "kv",
                "bucket": "config", "key": "app.*"},
            {"name": "s", "function": "f", "created_at": "c", "kind": "subject",
                "subject": "events.>"}]}))
        .unwrap();
        let table = trigger_table(&triggers);
        assert!(
            table.contains("kv        bucket config key app.*"),
            "{table}"
        );
        assert!(table.contains("subject   events.>"), "{table}");
        let fleet: Fleet = serde_json::from_value(json!({"supervisors": [{"id": "h-1",
            "host": "h", "pid": 1, "functions": [], "min": 0, "max": 3,
            "workers": [10, 11], "desired": 2, "updated_at": "u",
            "pools": [{"function": "resize", "processes": [10, 11], "desired": 2}]}],
            "workers": [], "functions": [], "allocation": {}}))
        .unwrap();
        let text = fleet_text(&fleet);
        assert!(
            text.contains("h-1 (min 0, max 3): 2 workers, wants 2"),
            "{text}"
        );
        assert!(text.contains("pool resize: 2 processes, wants 2"), "{text}");
    }

    #[test]
    fn a_confined_worker_shows_its_limits_and_each_sandbox_feature() {
        let fleet: Fleet = serde_json::from_value(json!({"supervisors": [],
            "workers": [{"id": "h-7", "host": "h", "pid": 7, "functions": ["hog"],
                "in_flight": 0, "updated_at": "u", "confinement": {
                    "memory_mb": 128, "memory_via": "rlimit", "data_limit_bytes": 1,
                    "open_files": 1024, "call_threads": 4, "sandbox": "auto",
                    "features": [
                        {"name": "landlock", "active": false,
                            "detail": "not built into this kernel"},
                        {"name": "seccomp", "active": true, "detail": "exec refused"}]}}],
            "functions": [], "allocation": {}}))
        .unwrap();
        let text = fleet_text(&fleet);
        assert!(
            text.contains("memory 128 MiB (rlimit), 1024 open files, 4 call threads; sandbox auto"),
            "{text}"
        );
        assert!(
            text.contains("landlock off: not built into this kernel"),
            "{text}"
        );
        assert!(text.contains("seccomp on: exec refused"), "{text}");
    }

    #[test]
    fn empty_listings_say_so() {
        let schedules = ScheduleList { schedules: vec![] };
        assert_eq!(schedule_table(&schedules), "no schedules\n");
        let triggers = TriggerList { triggers: vec![] };
        assert_eq!(trigger_table(&triggers), "no triggers\n");
    }
}
