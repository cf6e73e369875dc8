//! How a Squall process authenticates to NATS and secures the connection: the usual NATS
//! options (user and password, token, nkey seed, creds file; TLS), as flags and environment.
//!
//! Invariant: at most one authentication method is given, and a secret given as a flag can
//! always be given through the environment or a file instead (so it stays out of `ps`).

use async_nats::ConnectOptions;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The NATS credential and TLS flags every Squall binary accepts.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NatsAuth {
    /// NATS user name (with --nats-password).
    #[arg(long, global = true, env = "SQUALL_NATS_USER")]
    pub nats_user: Option<String>,
    /// NATS password.
    #[arg(
        long,
        global = true,
        env = "SQUALL_NATS_PASSWORD",
        hide_env_values = true
    )]
    pub nats_password: Option<String>,
    /// NATS token.
    #[arg(long, global = true, env = "SQUALL_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,
    /// File holding an nkey seed (`SU…`).
    #[arg(long, global = true, env = "SQUALL_NATS_NKEY_FILE")]
    pub nats_nkey_file: Option<PathBuf>,
    /// NATS credentials file (JWT and nkey seed).
    #[arg(long, global = true, env = "SQUALL_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// CA certificate (PEM) to verify the NATS server with; turns TLS on.
    #[arg(long, global = true, env = "SQUALL_NATS_CA")]
    pub nats_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS, with --nats-key.
    #[arg(long, global = true, env = "SQUALL_NATS_CERT", requires = "nats_key")]
    pub nats_cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    #[arg(long, global = true, env = "SQUALL_NATS_KEY", requires = "nats_cert")]
    pub nats_key: Option<PathBuf>,
    /// Inbox prefix for replies (default `_INBOX`); a per-role prefix keeps other users from
    /// reading this process's replies (see broker-config/nats/auth.conf).
    #[arg(long, global = true, env = "SQUALL_NATS_INBOX_PREFIX")]
    pub nats_inbox_prefix: Option<String>,
}

/// The NATS servers to connect to, from `--nats-url` / `SQUALL_NATS_URL`: one URL, or a
/// comma-separated list of a cluster's nodes (the client connects to any of them and moves to
/// another when its node goes away). Every entry is checked; the first bad one is named.
pub fn servers(list: &str) -> Result<Vec<async_nats::ServerAddr>, ServerListError> {
    let entries: Vec<&str> = list.split(',').map(str::trim).collect();
    if entries.iter().all(|e| e.is_empty()) {
        return Err(ServerListError::Empty);
    }
    entries
        .iter()
        .map(|entry| {
            if entry.is_empty() {
                return Err(ServerListError::EmptyEntry(list.to_string()));
            }
            entry
                .parse::<async_nats::ServerAddr>()
                .map_err(|e| ServerListError::Invalid {
                    entry: entry.to_string(),
                    reason: e.to_string(),
                })
        })
        .collect()
}

/// Why a server list is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerListError {
    #[error("--nats-url (SQUALL_NATS_URL) is empty; give a NATS URL such as nats://127.0.0.1:4222, or several separated by commas")]
    Empty,
    #[error("--nats-url (SQUALL_NATS_URL) {0:?} has an empty entry between commas")]
    EmptyEntry(String),
    #[error("--nats-url (SQUALL_NATS_URL) entry {entry:?} is not a NATS server URL: {reason}")]
    Invalid { entry: String, reason: String },
}

/// How often a Squall process pings its NATS server: with two pings unanswered the connection
/// counts as dead, so a vanished node is noticed within about three intervals, and the client
/// moves to another node of the list.
pub const PING_INTERVAL: Duration = Duration::from_secs(2);

/// Why a process could not connect to NATS.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Servers(#[from] ServerListError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
}

/// Connects to any server of `url` (a comma-separated list) as `name`, with these credentials:
/// retrying the first connection until a server answers, pinging every `PING_INTERVAL`,
/// reconnecting to any node of the cluster, and leaving a node in lame-duck mode at once (the
/// server announces it before it stops; a client that waits would be cut off later anyway).
pub async fn connect(
    auth: &NatsAuth,
    name: &str,
    url: &str,
) -> Result<async_nats::Client, ConnectError> {
    let servers = servers(url)?;
    let handle: Arc<OnceLock<async_nats::Client>> = Arc::new(OnceLock::new());
    let events = handle.clone();
    let client = auth
        .options(name)
        .await?
        .ping_interval(PING_INTERVAL)
        .retry_on_initial_connect()
        .event_callback(move |event| {
            let client = events.get().cloned();
            async move { on_event(event, client).await }
        })
        .connect(servers)
        .await
        .map_err(|source| ConnectError::Connect {
            url: url.to_string(),
            source,
        })?;
    let _ = handle.set(client.clone());
    Ok(client)
}

/// Logs connection events, and moves off a server that enters lame-duck mode.
async fn on_event(event: async_nats::Event, client: Option<async_nats::Client>) {
    use async_nats::Event;
    match event {
        Event::Connected => {
            // The new server's INFO may not have arrived yet, so no name here (async-nats logs
            // the address it connected to).
            tracing::info!(message = "NATS connection established");
        }
        Event::Disconnected => {
            tracing::warn!(message = "disconnected from NATS; reconnecting to any server")
        }
        Event::LameDuckMode => {
            tracing::info!(
                message = "the NATS server is entering lame-duck mode; moving to another"
            );
            if let Some(client) = client {
                if let Err(error) = client.force_reconnect().await {
                    tracing::warn!(message = "cannot reconnect to another NATS server", error = %error);
                }
            }
        }
        Event::SlowConsumer(sid) => {
            tracing::warn!(message = "a NATS subscription falls behind", sid)
        }
        Event::ServerError(error) => {
            tracing::warn!(message = "the NATS server reported an error", error = %error)
        }
        Event::ClientError(error) => {
            tracing::warn!(message = "NATS client error", error = %error)
        }
        Event::Draining | Event::Closed => {}
    }
}

/// Why the NATS connection options are unusable.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("give only one NATS authentication method; got {0}")]
    Several(String),
    #[error("--nats-user needs --nats-password (or SQUALL_NATS_PASSWORD)")]
    MissingPassword,
    #[error("--nats-password was given without --nats-user")]
    MissingUser,
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
}

impl NatsAuth {
    /// Checks the combination of flags.
    pub fn validate(&self) -> Result<(), AuthError> {
        let given: Vec<&str> = [
            ("user/password", self.nats_user.is_some()),
            ("token", self.nats_token.is_some()),
            ("nkey", self.nats_nkey_file.is_some()),
            ("creds", self.nats_creds.is_some()),
        ]
        .iter()
        .filter(|(_, on)| *on)
        .map(|(name, _)| *name)
        .collect();
        if given.len() > 1 {
            return Err(AuthError::Several(given.join(" and ")));
        }
        match (&self.nats_user, &self.nats_password) {
            (Some(_), None) => Err(AuthError::MissingPassword),
            (None, Some(_)) => Err(AuthError::MissingUser),
            _ => Ok(()),
        }
    }

    /// Connect options named `name` with these credentials and TLS settings.
    pub async fn options(&self, name: &str) -> Result<ConnectOptions, AuthError> {
        self.validate()?;
        let mut options = ConnectOptions::new().name(name);
        if let (Some(user), Some(password)) = (&self.nats_user, &self.nats_password) {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &self.nats_token {
            options = options.token(token.clone());
        }
        if let Some(path) = &self.nats_nkey_file {
            let seed = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
                what: "nkey seed file",
                path: path.display().to_string(),
                source,
            })?;
            options = options.nkey(seed.trim().to_string());
        }
        if let Some(path) = &self.nats_creds {
            options = options
                .credentials_file(path)
                .await
                .map_err(|source| AuthError::Read {
                    what: "NATS credentials file",
                    path: path.display().to_string(),
                    source,
                })?;
        }
        if let Some(prefix) = &self.nats_inbox_prefix {
            options = options.custom_inbox_prefix(prefix.clone());
        }
        if let Some(ca) = &self.nats_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(cert), Some(key)) = (&self.nats_cert, &self.nats_key) {
            options = options
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        Ok(options)
    }

    /// The same settings as environment variables, for child processes.
    pub fn to_env(&self) -> Vec<(&'static str, String)> {
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        [
            ("SQUALL_NATS_USER", self.nats_user.clone()),
            ("SQUALL_NATS_PASSWORD", self.nats_password.clone()),
            ("SQUALL_NATS_TOKEN", self.nats_token.clone()),
            ("SQUALL_NATS_NKEY_FILE", path(&self.nats_nkey_file)),
            ("SQUALL_NATS_CREDS", path(&self.nats_creds)),
            ("SQUALL_NATS_CA", path(&self.nats_ca)),
            ("SQUALL_NATS_CERT", path(&self.nats_cert)),
            ("SQUALL_NATS_KEY", path(&self.nats_key)),
            ("SQUALL_NATS_INBOX_PREFIX", self.nats_inbox_prefix.clone()),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_lists_take_every_node_and_name_a_bad_entry() {
        let nodes = servers("nats://a:4222, nats://b:4223,c:4224").unwrap();
        assert_eq!(nodes.len(), 3);
        assert_eq!(servers("nats://127.0.0.1:4222").unwrap().len(), 1);
        assert_eq!(servers(" "), Err(ServerListError::Empty));
        assert!(matches!(
            servers("nats://a:4222,,nats://b:4222"),
            Err(ServerListError::EmptyEntry(_))
        ));
        let bad = servers("nats://a:4222,nats://b:notaport").unwrap_err();
        assert!(bad.to_string().contains("\"nats://b:notaport\""), "{bad}");
    }

    #[test]
    fn one_method_at_a_time_and_user_needs_password() {
        let both = NatsAuth {
            nats_user: Some("u".into()),
            nats_password: Some("p".into()),
            nats_token: Some("t".into()),
            ..Default::default()
        };
        assert!(matches!(both.validate(), Err(AuthError::Several(_))));
        let user = NatsAuth {
            nats_user: Some("u".into()),
            ..Default::default()
        };
        assert!(matches!(user.validate(), Err(AuthError::MissingPassword)));
        assert!(NatsAuth::default().validate().is_ok());
    }

    #[test]
    fn settings_travel_as_environment() {
        let auth = NatsAuth {
            nats_token: Some("t".into()),
            nats_ca: Some("/ca.pem".into()),
            ..Default::default()
        };
        assert_eq!(
            auth.to_env(),
            vec![
                ("SQUALL_NATS_TOKEN", "t".into()),
                ("SQUALL_NATS_CA", "/ca.pem".into())
            ]
        );
    }
}
