//! Account commands: register, whoami, logout, passwd, keygen, key, devices, fingerprint.

use std::path::PathBuf;

use im_client::{Error, exit_code, home};
use im_proto::crypto::fingerprint as fingerprint_of;
use im_proto::hostkey::RsaSigner;
use im_proto::msg::DeviceId;

use super::context::{Context, Login, NEW_PASSWORD_ENV, PASSWORD_ENV};
use super::error::CliError;
use super::json::JsonLine;
use super::output::{device_human, device_json, key_json, whoami_human, whoami_json};
use super::{DevicesAction, KeyAction};

pub async fn register(ctx: &Context) -> Result<u8, CliError> {
    let password = ctx.new_password(PASSWORD_ENV, ctx.global.password_file.as_deref(), "New password")?;
    ctx.with_client(Login::Register(password), async |client, _| {
        let s = client.session();
        ctx.out.emit(
            || {
                JsonLine::new("registered")
                    .str("user", s.user.as_str())
                    .str("server", &s.server.key())
                    .u64("device", s.device_id.get())
                    .finish()
            },
            || {
                format!(
                    "registered {} on {} (device {}); this device is logged in",
                    s.user, s.server, s.device_id
                )
            },
        )
    })
    .await?;
    Ok(exit_code::SUCCESS)
}

pub async fn whoami(ctx: &Context) -> Result<u8, CliError> {
    ctx.with_client(Login::Normal, async |client, _| {
        let s = client.session();
        ctx.out.emit(|| whoami_json(&s), || whoami_human(&s))
    })
    .await?;
    Ok(exit_code::SUCCESS)
}

pub async fn logout(ctx: &Context) -> Result<u8, CliError> {
    let (server, user) = (ctx.server()?, ctx.user()?);
    if ctx.home.load_ticket(&server, &user)?.is_none() {
        ctx.out.emit(
            || {
                JsonLine::new("logged_out")
                    .str("user", user.as_str())
                    .str("server", &server.key())
                    .bool("revoked", false)
                    .finish()
            },
            || format!("{user} is not logged in on {server} from this device (no ticket stored)"),
        )?;
        return Ok(exit_code::SUCCESS);
    }
    let result = ctx
        .with_client(Login::Normal, async |client, _| Ok(client.logout().await?))
        .await;
    // The local ticket goes even if the server could not be told.
    ctx.home.delete_ticket(&server, &user)?;
    result?;
    ctx.out.emit(
        || {
            JsonLine::new("logged_out")
                .str("user", user.as_str())
                .str("server", &server.key())
                .bool("revoked", true)
                .finish()
        },
        || format!("logged out {user} on {server}: this device's tickets are revoked"),
    )?;
    Ok(exit_code::SUCCESS)
}

pub async fn passwd(ctx: &Context, new_password_file: Option<PathBuf>) -> Result<u8, CliError> {
    let user = ctx.user()?;
    let old = ctx
        .password_source(Some(format!("Current password for {user}: ")))
        .ok_or_else(|| {
            Error::NoCredentials(format!(
                "no current password: set {PASSWORD_ENV}, use --password-file, or run on a terminal"
            ))
        })?;
    let old = tokio::task::spawn_blocking(move || old())
        .await
        .map_err(|_| Error::NoCredentials("password prompt failed".into()))??;
    let new = ctx.new_password(NEW_PASSWORD_ENV, new_password_file.as_deref(), "New password")?;
    ctx.with_client(Login::Normal, async |client, _| {
        client.change_password(old, new).await?;
        ctx.out.ok("passwd", || "password changed".into())
    })
    .await?;
    Ok(exit_code::SUCCESS)
}

pub async fn keygen(ctx: &Context, bits: u16, out: Option<PathBuf>) -> Result<u8, CliError> {
    let path = out.unwrap_or_else(|| ctx.home.key_path());
    if path.exists() {
        return Err(Error::Local {
            what: "refusing to overwrite the key file",
            path,
            source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
        }
        .into());
    }
    let key = tokio::task::spawn_blocking(move || RsaSigner::generate(&mut rand::rng(), bits.into()))
        .await
        .map_err(|_| Error::Refused("key generation failed".into()))?
        .map_err(|e| Error::Refused(format!("key generation failed: {e}")))?;
    home::save_key(&path, &key)?;
    let shown = path.display().to_string();
    ctx.out.emit(
        || key_json(Some(&shown), &key),
        || format!("wrote a {bits}-bit user key to {shown}\nfingerprint: {}\nattach it to your account with: im-client key add", key.fingerprint()),
    )?;
    Ok(exit_code::SUCCESS)
}

pub async fn key(ctx: &Context, action: KeyAction) -> Result<u8, CliError> {
    let key = ctx.login_key()?.ok_or_else(|| {
        CliError::usage(format!(
            "no user key: use --key FILE, or create one with `im-client keygen` ({})",
            ctx.home.key_path().display()
        ))
    })?;
    let fp = key.fingerprint();
    ctx.with_client(Login::NoKey, async |client, _| match action {
        KeyAction::Add => {
            client.add_key(key.public_der().to_vec()).await?;
            ctx.out.emit(
                || {
                    JsonLine::new("ok")
                        .str("command", "key add")
                        .str("fingerprint", &fp)
                        .finish()
                },
                || format!("key {fp} attached: it now logs you in without a password"),
            )
        }
        KeyAction::Remove => {
            client.remove_key(key.public_der().to_vec()).await?;
            ctx.out.emit(
                || {
                    JsonLine::new("ok")
                        .str("command", "key remove")
                        .str("fingerprint", &fp)
                        .finish()
                },
                || format!("key {fp} removed from your account"),
            )
        }
    })
    .await?;
    Ok(exit_code::SUCCESS)
}

pub async fn devices(ctx: &Context, action: Option<DevicesAction>) -> Result<u8, CliError> {
    match action {
        None => {
            ctx.with_client(Login::Normal, async |client, _| {
                for d in client.devices().await? {
                    ctx.out.emit(|| device_json(&d), || device_human(&d))?;
                }
                Ok(())
            })
            .await?
        }
        Some(DevicesAction::Revoke { id }) => {
            let device = DeviceId::new(id).ok_or_else(|| CliError::usage(format!("{id} is not a device id")))?;
            ctx.with_client(Login::Normal, async |client, _| {
                client.revoke_device(device).await?;
                ctx.out.ok("devices revoke", || format!("device {device} revoked"))
            })
            .await?
        }
    }
    Ok(exit_code::SUCCESS)
}

pub async fn fingerprint(ctx: &Context) -> Result<u8, CliError> {
    let server = ctx.server()?;
    let pinned = ctx.home.known_hosts().lookup(&server)?;
    let (fp, is_pinned) = match pinned {
        Some((fp, _)) => (fp, true),
        None => (fingerprint_of(&im_client::fetch_host_key(&server).await?), false),
    };
    ctx.out.emit(
        || {
            JsonLine::new("fingerprint")
                .str("server", &server.key())
                .str("fingerprint", &fp)
                .bool("pinned", is_pinned)
                .finish()
        },
        || {
            let note = if is_pinned {
                "pinned"
            } else {
                "not pinned: fetched from the server just now"
            };
            format!("{fp} ({server}, {note})")
        },
    )?;
    Ok(exit_code::SUCCESS)
}
