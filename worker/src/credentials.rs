//! The broker login a supervisor hands a function's process: that function's own credentials.
//!
//! Invariant: a process started through `hand_login` with an issuer gets no variable that
//! carries its supervisor's login (role user, password, token, nkey, creds, the issuer's seed),
//! only a token for its one function and the broker's TLS settings.

use squall_broker::callout::{CalloutError, Issuer};
use squall_broker::connect::NatsAuth;

/// Every variable that can carry a broker login: a function's process inherits its
/// supervisor's environment and must get none of the supervisor's own.
pub const LOGIN_VARS: [&str; 7] = [
    "SQUALL_NATS_USER",
    "SQUALL_NATS_PASSWORD",
    "SQUALL_NATS_TOKEN",
    "SQUALL_NATS_NKEY_FILE",
    "SQUALL_NATS_CREDS",
    "SQUALL_NATS_INBOX_PREFIX",
    squall_broker::callout::SEED_ENV,
];

/// The broker's TLS settings, which a function's process keeps.
const TLS_VARS: [&str; 3] = ["SQUALL_NATS_CA", "SQUALL_NATS_CERT", "SQUALL_NATS_KEY"];

/// Sets `command`'s broker login for a process of `function`: with an issuer (the broker hands
/// function logins to the auth callout), a token minted for the function and the TLS settings
/// of `auth`; without one (a broker with no authentication), `auth` itself.
pub fn hand_login(
    command: &mut tokio::process::Command,
    issuer: Option<&Issuer>,
    function: &str,
    auth: &NatsAuth,
) -> Result<(), CalloutError> {
    for var in LOGIN_VARS {
        command.env_remove(var);
    }
    let env = auth.to_env();
    match issuer {
        Some(issuer) => {
            command.envs(issuer.mint(function)?.to_env());
            command.envs(env.into_iter().filter(|(k, _)| TLS_VARS.contains(k)));
        }
        None => {
            command.envs(env);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(command: &tokio::process::Command) -> Vec<(String, Option<String>)> {
        command
            .as_std()
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect()
    }

    #[test]
    fn a_functions_process_gets_its_token_and_none_of_the_supervisors_login() {
        let auth = NatsAuth {
            nats_user: Some("worker".into()),
            nats_password: Some("fleet-secret".into()),
            nats_ca: Some("/ca.pem".into()),
            ..NatsAuth::default()
        };
        let issuer = Issuer::generate();
        let mut command = tokio::process::Command::new("true");
        hand_login(&mut command, Some(&issuer), "resize", &auth).unwrap();
        let env = vars(&command);
        let set = |name: &str| {
            env.iter()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| v.clone())
        };
        assert!(set("SQUALL_NATS_TOKEN").is_some());
        assert_eq!(set("SQUALL_NATS_CA").as_deref(), Some("/ca.pem"));
        for var in [
            "SQUALL_NATS_USER",
            "SQUALL_NATS_PASSWORD",
            squall_broker::callout::SEED_ENV,
        ] {
            assert!(
                env.iter().any(|(k, v)| k == var && v.is_none()),
                "{var} is removed, not inherited: {env:?}"
            );
        }
        let token = set("SQUALL_NATS_TOKEN").unwrap();
        assert!(!token.contains("fleet-secret"));
    }

    #[test]
    fn without_an_issuer_the_process_gets_the_supervisors_login() {
        let auth = NatsAuth {
            nats_user: Some("worker".into()),
            ..NatsAuth::default()
        };
        let mut command = tokio::process::Command::new("true");
        hand_login(&mut command, None, "resize", &auth).unwrap();
        assert!(vars(&command)
            .iter()
            .any(|(k, v)| k == "SQUALL_NATS_USER" && v.as_deref() == Some("worker")));
    }
}
