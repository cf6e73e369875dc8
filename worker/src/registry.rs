//! Follows the registry: each put loads the function's library into the functions table and
//! (re)starts its pull loop, each delete removes both.

use crate::jobs::context::Jobs;
use crate::jobs::pull::serve_function;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::kv;
use futures::StreamExt;
use squall_broker::FunctionRecord;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;

/// The registry watch's state: the job path it feeds, and one pull loop per served function.
pub struct Registry {
    jobs: Arc<Jobs>,
    /// Functions this worker serves; empty means all.
    functions: Vec<String>,
    runners: Mutex<HashMap<String, JoinHandle<()>>>,
}

impl Registry {
    pub fn new(jobs: Arc<Jobs>, functions: Vec<String>) -> Registry {
        Registry {
            jobs,
            functions,
            runners: Mutex::new(HashMap::new()),
        }
    }

    fn serves(&self, name: &str) -> bool {
        self.functions.is_empty() || self.functions.iter().any(|f| f == name)
    }

    async fn apply_put(&self, value: &[u8]) {
        let record = match FunctionRecord::decode(value) {
            Ok(record) => record,
            Err(error) => {
                tracing::error!(message = "skipping unreadable registry record", %error);
                return;
            }
        };
        if !self.serves(&record.name) {
            return;
        }
        let state = self.jobs.functions.load(record).await;
        let record = &state.record;
        if let Err(error) = &state.library {
            tracing::warn!(message = "function failed to load; its jobs will fail with kind load",
                function = %record.name, version = %record.version, %error);
        } else {
            tracing::info!(message = "function ready", function = %record.name, version = %record.version);
        }
        // A Python interpreter keeps the modules it imported by name: a new version's code
        // runs in a fresh process (this one finishes its calls and goes).
        if self.functions.len() == 1 && self.jobs.functions.wants_fresh_process() {
            self.jobs
                .lifecycle
                .request_recycle("a new version of a one-per-process runtime's bundle");
        }
        // A confined process keeps the limits it started with: a new memory_mb needs a new
        // process.
        if let Some(confiner) = &self.jobs.confiner {
            if confiner
                .memory_mb()
                .is_some_and(|applied| applied != record.memory_mb)
            {
                self.jobs
                    .lifecycle
                    .request_recycle("the function's memory_mb changed");
            }
        }
        let name = record.name.clone();
        let concurrency = state.spec.concurrency;
        let previous = self.jobs.functions.insert(name.clone(), state);
        let mut runners = self.runners.lock().expect("runners lock");
        let running = runners.get(&name).is_some_and(|h| !h.is_finished());
        // The pull loop sizes itself from the spec's concurrency: restart it when that changes.
        let resized = previous.is_some_and(|p| p != concurrency);
        if resized {
            if let Some(handle) = runners.remove(&name) {
                handle.abort();
            }
        }
        if !running || resized {
            let jobs = self.jobs.clone();
            let fname = name.clone();
            runners.insert(
                name,
                tokio::spawn(async move { serve_function(jobs, fname).await }),
            );
        }
    }

    fn apply_delete(&self, name: &str) {
        self.jobs.functions.remove(name);
        if let Some(handle) = self.runners.lock().expect("runners lock").remove(name) {
            handle.abort();
        }
        tracing::info!(message = "function removed", function = %name);
    }

    /// Applies the registry's history and then its changes, until the worker stops (`Ok`) or
    /// the watch fails.
    pub async fn watch(&self) -> anyhow::Result<()> {
        let topology = &self.jobs.outlet.topology;
        // A process of one function watches only its entry (its credentials may allow no more).
        let mut entries = match self.functions.as_slice() {
            [only] => squall_broker::watch::watch_named(
                &topology.jetstream.client(),
                &topology.registry,
                only,
                DeliverPolicy::LastPerSubject,
            )
            .await?
            .map(|e| e.map_err(anyhow::Error::from))
            .boxed(),
            _ => topology
                .registry
                .watch_with_history(">")
                .await?
                .map(|e| e.map_err(anyhow::Error::from))
                .boxed(),
        };
        let mut shutdown = self.jobs.lifecycle.stopping();
        if *shutdown.borrow() {
            return Ok(());
        }
        loop {
            let entry = tokio::select! {
                entry = entries.next() => entry,
                _ = shutdown.changed() => return Ok(()),
            };
            let Some(entry) = entry else {
                anyhow::bail!("registry watch ended");
            };
            let entry = entry?;
            match entry.operation {
                kv::Operation::Put => self.apply_put(&entry.value).await,
                kv::Operation::Delete | kv::Operation::Purge => self.apply_delete(&entry.key),
            }
        }
    }

    /// Stops every pull loop: no new job is pulled after this.
    pub fn stop_pulling(&self) {
        for (_, handle) in self.runners.lock().expect("runners lock").drain() {
            handle.abort();
        }
    }
}
