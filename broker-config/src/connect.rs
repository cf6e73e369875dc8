//! How a Squall process authenticates to NATS and secures the connection: the usual NATS
//! options (user and password, token, nkey seed, creds file; TLS), as flags and environment.
//!
//! Invariant: at most one authentication method is given, and a secret given as a flag can
//! always be given through the environment or a file instead (so it stays out of `ps`).

use async_nats::ConnectOptions;
use std::path::PathBuf;

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
