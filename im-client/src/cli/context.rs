//! Everything a command needs before it talks to the server: the home, the server and user
//! (options, then environment, then config), the credentials, the host-key policy, and the
//! prompts on the terminal.
//!
//! "On a terminal" means stdin or stderr is one; prompts then read and write `/dev/tty`, so
//! `echo hi | im-client send bob` can still ask for a password. Without a terminal nothing
//! is ever asked: a missing password or an unknown host key is an error.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use im_client::{
    Client, ConnectOptions, Credentials, Error, Events, Home, HostKeyPolicy, PasswordSource, ServerAddr, UnknownHost,
    home,
};
use im_proto::hostkey::RsaSigner;
use im_proto::msg::Password;
use im_proto::{RoomName, Target, UserName};

use super::GlobalOpts;
use super::error::CliError;
use super::output::Output;

pub use im_client::password::PASSWORD_ENV;
use im_client::password::{
    check_new as check_new_password, from_env as password_from_env, read_file as read_password_file,
};

/// The environment variable holding the new password for `passwd`.
pub const NEW_PASSWORD_ENV: &str = "IM_NEW_PASSWORD";

/// How a command logs in.
pub enum Login {
    /// Ticket, then key, then password.
    Normal,
    /// Ticket, then password: for `key add`, whose key is not attached yet.
    NoKey,
    /// Create the account with this password.
    Register(Password),
}

pub struct Context {
    pub global: GlobalOpts,
    pub home: Home,
    pub out: Output,
}

/// Whether a person is there to answer a prompt.
pub fn interactive() -> bool {
    std::io::stdin().is_terminal() || std::io::stderr().is_terminal()
}

/// Asks a question on the terminal and returns the answer line.
fn ask_tty(question: &str) -> std::io::Result<String> {
    let tty = std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty")?;
    let mut w = &tty;
    w.write_all(question.as_bytes())?;
    w.flush()?;
    let mut line = String::new();
    std::io::BufReader::new(&tty).read_line(&mut line)?;
    Ok(line.trim().to_owned())
}

fn prompt_password(prompt: &str) -> Result<Password, Error> {
    rpassword::prompt_password(prompt)
        .map(Password::new)
        .map_err(|e| Error::Local {
            what: "cannot read the password from",
            path: PathBuf::from("/dev/tty"),
            source: e,
        })
}

/// Wraps a source so that it is asked at most once (a prompt is not repeated).
fn once(f: impl Fn() -> Result<Password, Error> + Send + Sync + 'static) -> PasswordSource {
    let cache: Mutex<Option<Password>> = Mutex::new(None);
    Arc::new(move || {
        let mut cached = cache
            .lock()
            .map_err(|_| Error::NoCredentials("password source poisoned".into()))?;
        if let Some(p) = cached.as_ref() {
            return Ok(p.clone());
        }
        let p = f()?;
        *cached = Some(p.clone());
        Ok(p)
    })
}

pub fn parse_user(s: &str) -> Result<UserName, CliError> {
    UserName::parse(s).map_err(|e| CliError::usage(e.to_string()))
}

pub fn parse_room(s: &str) -> Result<RoomName, CliError> {
    RoomName::parse(s).map_err(|e| CliError::usage(e.to_string()))
}

pub fn parse_target(s: &str) -> Result<Target, CliError> {
    Target::parse(s).map_err(|e| CliError::usage(e.to_string()))
}

impl Context {
    pub fn new(global: GlobalOpts) -> Result<Self, CliError> {
        if let Some(fp) = &global.trust_fingerprint
            && !(fp.starts_with("SHA256:") && fp.len() > "SHA256:".len())
        {
            return Err(CliError::usage(format!(
                "--trust-fingerprint {fp:?}: expected SHA256:<base64>, as `im-client fingerprint` prints it"
            )));
        }
        let home = Home::resolve(global.home.clone())?;
        let out = Output { json: global.json };
        Ok(Context { global, home, out })
    }

    pub fn server(&self) -> Result<ServerAddr, CliError> {
        let typed = match self.global.server.clone().filter(|s| !s.is_empty()) {
            Some(s) => s,
            None => self.home.load_config()?.server.ok_or_else(|| {
                CliError::usage(
                    "no server given: use --server HOST:PORT (or IM_SERVER); register or log in once to remember it",
                )
            })?,
        };
        Ok(ServerAddr::parse(&typed)?)
    }

    pub fn user(&self) -> Result<UserName, CliError> {
        let typed = match self.global.user.clone().filter(|s| !s.is_empty()) {
            Some(s) => s,
            None => self.home.load_config()?.user.ok_or_else(|| {
                CliError::usage("no user given: use --user NAME (or IM_USER); register or log in once to remember it")
            })?,
        };
        parse_user(&typed)
    }

    /// The login password: IM_PASSWORD, then --password-file, then (if allowed and there is
    /// a terminal) a prompt. Asked at most once, and only when needed.
    pub fn password_source(&self, prompt: Option<String>) -> Option<PasswordSource> {
        if let Some(p) = password_from_env(PASSWORD_ENV) {
            return Some(once(move || Ok(p.clone())));
        }
        if let Some(path) = self.global.password_file.clone() {
            return Some(once(move || read_password_file(&path)));
        }
        let prompt = prompt.filter(|_| interactive())?;
        Some(once(move || prompt_password(&prompt)))
    }

    /// The password for a new account (register) or a new password (passwd): asked twice on
    /// a terminal.
    pub fn new_password(&self, env: &str, file: Option<&Path>, what: &str) -> Result<Password, CliError> {
        let p = if let Some(p) = password_from_env(env) {
            p
        } else if let Some(path) = file {
            read_password_file(path)?
        } else if interactive() {
            let a = prompt_password(&format!("{what}: "))?;
            let b = prompt_password(&format!("{what} (again): "))?;
            if a != b {
                return Err(CliError::usage("the passwords do not match"));
            }
            a
        } else {
            return Err(Error::NoCredentials(format!(
                "no password: set {env}, use a password file, or run on a terminal"
            ))
            .into());
        };
        check_new_password(&p)?;
        Ok(p)
    }

    /// The user key: --key FILE, else the home's key if there is one.
    pub fn login_key(&self) -> Result<Option<Arc<RsaSigner>>, CliError> {
        let path = match &self.global.key {
            Some(p) => p.clone(),
            None => {
                let p = self.home.key_path();
                if !p.exists() {
                    return Ok(None);
                }
                p
            }
        };
        Ok(Some(Arc::new(home::load_key(&path)?)))
    }

    pub fn host_policy(&self) -> HostKeyPolicy {
        let unknown = if self.global.accept_new {
            UnknownHost::AcceptNew
        } else if interactive() {
            UnknownHost::Ask(Arc::new(|server: &str, fp: &str| {
                let q = format!(
                    "The host key of {server} is not known yet.\nIts fingerprint is {fp}.\n\
                     Check it with the server's operator. Trust it and connect (yes/no)? "
                );
                matches!(
                    ask_tty(&q).as_deref().map(str::to_ascii_lowercase).as_deref(),
                    Ok("yes" | "y")
                )
            }))
        } else {
            UnknownHost::Refuse
        };
        HostKeyPolicy {
            known_hosts: self.home.known_hosts(),
            unknown,
            expected: self.global.trust_fingerprint.clone(),
        }
    }

    /// Connects and logs in; remembers the server and user in the config after the first
    /// successful login (always after a registration).
    pub async fn connect(&self, login: Login) -> Result<(Client, Events), CliError> {
        let server = self.server()?;
        let user = self.user()?;
        let prompt = Some(format!("Password for {user} on {server}: "));
        let (credentials, register) = match login {
            Login::Register(password) => {
                let source: PasswordSource = Arc::new(move || Ok(password.clone()));
                (
                    Credentials {
                        use_ticket: false,
                        key: None,
                        password: Some(source),
                        register: true,
                    },
                    true,
                )
            }
            Login::Normal | Login::NoKey => {
                let key = if matches!(login, Login::Normal) {
                    self.login_key()?
                } else {
                    None
                };
                // An explicit --key is for scripts: do not fall back to a password prompt.
                let prompt = prompt.filter(|_| self.global.key.is_none() || matches!(login, Login::NoKey));
                (
                    Credentials {
                        use_ticket: true,
                        key,
                        password: self.password_source(prompt),
                        register: false,
                    },
                    false,
                )
            }
        };
        let opts = ConnectOptions {
            server: server.clone(),
            user: user.clone(),
            home: self.home.clone(),
            device_name: home::default_device_name(),
            credentials,
            host_keys: self.host_policy(),
            reconnect: None,
        };
        let (client, events) = im_client::connect(opts).await?;
        let mut config = self.home.load_config()?;
        let before = config.clone();
        if register || config.server.is_none() {
            config.server = Some(server.key());
        }
        if register || config.user.is_none() {
            config.user = Some(client.session().user.to_string());
        }
        if config != before {
            self.home.save_config(&config)?;
        }
        Ok((client, events))
    }

    /// Connects, runs `f`, and closes the connection cleanly whatever `f` returned (so acks
    /// and the Close record are written before the process exits).
    pub async fn with_client<T>(
        &self,
        login: Login,
        f: impl AsyncFnOnce(&Client, &mut Events) -> Result<T, CliError>,
    ) -> Result<T, CliError> {
        let (client, mut events) = self.connect(login).await?;
        let result = f(&client, &mut events).await;
        client.close().await;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_asked_once() {
        let n = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let m = n.clone();
        let s = once(move || {
            m.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(Password::from("pw"))
        });
        assert_eq!(s().unwrap().expose(), "pw");
        assert_eq!(s().unwrap().expose(), "pw");
        assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
