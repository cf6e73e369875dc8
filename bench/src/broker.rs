//! The benchmark's broker logins: the shipped users (`users.conf`) with passwords made for the
//! run, plus a `bench` user of its own for the bare pipeline and the measurements; or, with
//! `--open-broker`, the tests' open profile, for the A/B that prices authentication.

use anyhow::Context as _;
use squall_broker::env::{ENV_NATS_INBOX_PREFIX, ENV_NATS_PASSWORD, ENV_NATS_USER};
use std::path::{Path, PathBuf};

/// The password variables nats-server reads (users.conf), and the benchmark's own.
const VARIABLES: [&str; 5] = [
    "SQUALL_DISPATCHER_PASSWORD",
    "SQUALL_WORKER_PASSWORD",
    "SQUALL_CLIENT_PASSWORD",
    "SQUALL_ROUTE_PASSWORD",
    "SQUALL_BENCH_PASSWORD",
];
/// Where users.conf's user list opens: the benchmark's user goes first in it.
const USERS_OPEN: &str = "users = [";
/// The users the auth callout leaves alone (users.conf): the benchmark's joins them.
const AUTH_USERS: &str = "auth_users: [";

/// How the benchmark's processes log in to its brokers.
#[derive(Debug, Clone)]
pub struct Broker {
    /// `--open-broker`: no users at all.
    pub open: bool,
    passwords: Vec<(String, String)>,
    /// The issuer of function credentials (users.conf's auth callout), made for the run.
    issuer: squall_broker::callout::Issuer,
}

/// A Squall role (users.conf).
#[derive(Debug, Clone, Copy)]
pub enum Role {
    Dispatcher,
    Worker,
    /// The benchmark itself and its bare reference worker: every right, as the bare pipeline
    /// makes streams of its own.
    Bench,
}

impl Broker {
    /// Fresh passwords for this run (or none with `open`).
    pub fn new(open: bool) -> anyhow::Result<Broker> {
        let mut passwords = Vec::new();
        if !open {
            for variable in VARIABLES {
                let mut random = [0u8; 24];
                getrandom::fill(&mut random).context("cannot read random bytes")?;
                passwords.push((variable.to_string(), format!("b{}", hex::encode(random))));
            }
        }
        Ok(Broker {
            open,
            passwords,
            issuer: squall_broker::callout::Issuer::generate(),
        })
    }

    fn password(&self, variable: &str) -> &str {
        self.passwords
            .iter()
            .find(|(k, _)| k == variable)
            .map_or("", |(_, v)| v.as_str())
    }

    /// Writes the broker config into `dir` (beside the users it includes) and returns its path:
    /// the shipped default.conf and users.conf with the benchmark's user added, or the open
    /// profile.
    pub fn config(&self, root: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
        let shipped = root.join("broker-config/nats");
        if self.open {
            return Ok(shipped.join("open.conf"));
        }
        let read = |name: &str| {
            std::fs::read_to_string(shipped.join(name))
                .with_context(|| format!("cannot read broker-config/nats/{name}"))
        };
        let users = read("users.conf")?;
        anyhow::ensure!(
            users.matches(USERS_OPEN).count() == 1,
            "broker-config/nats/users.conf has no single `{USERS_OPEN}`"
        );
        anyhow::ensure!(
            users.matches(AUTH_USERS).count() == 1,
            "broker-config/nats/users.conf has no single `{AUTH_USERS}`"
        );
        let users = users
            .replacen(
                USERS_OPEN,
                &format!("{USERS_OPEN}\n    {{ user: bench, password: $SQUALL_BENCH_PASSWORD }}"),
                1,
            )
            .replacen(AUTH_USERS, &format!("{AUTH_USERS}bench, "), 1);
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::write(dir.join("users.conf"), users).context("cannot write users.conf")?;
        let config = dir.join("nats.conf");
        std::fs::write(&config, read("default.conf")?).context("cannot write nats.conf")?;
        Ok(config)
    }

    /// A cluster node's config in `dir`: `config` plus the routes' login (none when open).
    pub fn node_config(&self, config: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
        if self.open {
            return Ok(config.to_path_buf());
        }
        let path = dir.join("node.conf");
        std::fs::write(
            &path,
            format!(
                "include \"{}\"\ncluster {{\n  authorization {{ user: route, password: $SQUALL_ROUTE_PASSWORD }}\n}}\n",
                config.display()
            ),
        )
        .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }

    /// What a route URL carries before the host (`route:<password>@`), or nothing.
    pub fn route_login(&self) -> String {
        match self.open {
            true => String::new(),
            false => format!("route:{}@", self.password("SQUALL_ROUTE_PASSWORD")),
        }
    }

    /// nats-server's environment: every password and the callout issuer's public key.
    pub fn server_env(&self) -> Vec<(String, String)> {
        let mut env = self.passwords.clone();
        if !self.open {
            env.push((
                squall_broker::callout::ISSUER_ENV.to_string(),
                self.issuer.public_key(),
            ));
        }
        env
    }

    /// The environment a process logs in as `role` with (nothing when open).
    pub fn login(&self, role: Role) -> Vec<(String, String)> {
        if self.open {
            return Vec::new();
        }
        let (user, variable) = match role {
            Role::Dispatcher => ("dispatcher", "SQUALL_DISPATCHER_PASSWORD"),
            Role::Worker => ("worker", "SQUALL_WORKER_PASSWORD"),
            Role::Bench => ("bench", "SQUALL_BENCH_PASSWORD"),
        };
        let mut env = vec![
            (ENV_NATS_USER.to_string(), user.to_string()),
            (
                ENV_NATS_PASSWORD.to_string(),
                self.password(variable).to_string(),
            ),
        ];
        if !matches!(role, Role::Bench) {
            env.push((ENV_NATS_INBOX_PREFIX.to_string(), format!("_INBOX_{user}")));
        }
        if matches!(role, Role::Worker) {
            env.push((
                squall_broker::callout::SEED_ENV.to_string(),
                self.issuer.seed(),
            ));
        }
        env
    }

    /// Connect options of the benchmark's own connections.
    pub fn options(&self) -> async_nats::ConnectOptions {
        match self.open {
            true => async_nats::ConnectOptions::new(),
            false => async_nats::ConnectOptions::with_user_and_password(
                "bench".into(),
                self.password("SQUALL_BENCH_PASSWORD").into(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    #[test]
    fn the_shipped_users_get_the_benchmarks_user_and_the_roles_log_in_with_their_inboxes() {
        let broker = Broker::new(false).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = broker.config(&root(), dir.path()).unwrap();
        assert!(std::fs::read_to_string(&config)
            .unwrap()
            .contains("include \"users.conf\""));
        let users = std::fs::read_to_string(dir.path().join("users.conf")).unwrap();
        assert!(users.contains("{ user: bench, password: $SQUALL_BENCH_PASSWORD }"));
        assert!(users.contains("user: worker"));
        let login = broker.login(Role::Worker);
        assert!(login.contains(&(ENV_NATS_INBOX_PREFIX.into(), "_INBOX_worker".into())));
        // Every password, and the public key of the issuer of function credentials.
        let env = broker.server_env();
        assert_eq!(env.len(), VARIABLES.len() + 1);
        assert!(env
            .iter()
            .any(|(k, v)| k == squall_broker::callout::ISSUER_ENV && !v.is_empty()));
    }

    #[test]
    fn an_open_broker_has_no_logins() {
        let broker = Broker::new(true).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = broker.config(&root(), dir.path()).unwrap();
        assert!(config.ends_with("open.conf"));
        assert!(broker.login(Role::Dispatcher).is_empty());
        assert_eq!(broker.route_login(), "");
    }
}
