//! Contacts, presence and blocking: contacts, status, presence, block, unblock, blocked.

use im_client::exit_code;
use im_proto::msg::{ContactState, Presence, PresenceInfo};

use super::context::{Context, Login, parse_user};
use super::error::CliError;
use super::json::JsonLine;
use super::output::{contact_human, contact_json, presence_human, presence_json};
use super::{ContactsAction, StatusArg};

pub async fn contacts(ctx: &Context, action: Option<ContactsAction>) -> Result<u8, CliError> {
    ctx.with_client(Login::Normal, async |client, _| match &action {
        None => {
            for c in client.contacts().await? {
                ctx.out.emit(|| contact_json(&c), || contact_human(&c))?;
            }
            Ok(())
        }
        Some(ContactsAction::Add { name }) => {
            let user = parse_user(name)?;
            client.contact_request(&user).await?;
            ctx.out.ok("contacts add", || format!("asked {user} to be a contact"))
        }
        Some(ContactsAction::Accept { name }) => {
            let user = parse_user(name)?;
            client.contact_accept(&user).await?;
            ctx.out.ok("contacts accept", || format!("{user} is now a contact"))
        }
        Some(ContactsAction::Remove { name }) => {
            let user = parse_user(name)?;
            client.contact_remove(&user).await?;
            ctx.out
                .ok("contacts remove", || format!("{user} removed from contacts"))
        }
    })
    .await?;
    Ok(exit_code::SUCCESS)
}

pub async fn status(ctx: &Context, status: StatusArg, text: Option<String>) -> Result<u8, CliError> {
    let presence = match status {
        StatusArg::Online => Presence::Online,
        StatusArg::Away => Presence::Away,
        StatusArg::Busy => Presence::Busy,
        StatusArg::Offline => Presence::Offline,
    };
    ctx.with_client(Login::Normal, async |client, _| {
        client.set_presence(presence, text.as_deref()).await?;
        ctx.out.ok("status", || format!("you are now {presence}"))
    })
    .await?;
    Ok(exit_code::SUCCESS)
}

pub async fn presence(ctx: &Context, names: Vec<String>) -> Result<u8, CliError> {
    let users = names.iter().map(|n| parse_user(n)).collect::<Result<Vec<_>, _>>()?;
    ctx.with_client(Login::Normal, async |client, _| {
        let entries = if users.is_empty() {
            // Default: every accepted contact, whose presence the contact list carries.
            client
                .contacts()
                .await?
                .into_iter()
                .filter(|c| c.state == ContactState::Accepted)
                .map(|c| PresenceInfo {
                    user: c.user,
                    presence: c.presence,
                    text: c.text,
                })
                .collect()
        } else {
            client.presence(users.clone()).await?
        };
        for p in &entries {
            ctx.out.emit(|| presence_json(p), || presence_human(p))?;
        }
        Ok(())
    })
    .await?;
    Ok(exit_code::SUCCESS)
}

pub async fn block(ctx: &Context, name: &str, block: bool) -> Result<u8, CliError> {
    let user = parse_user(name)?;
    ctx.with_client(Login::Normal, async |client, _| {
        if block {
            client.block(&user).await?;
            ctx.out.ok("block", || format!("blocked {user}"))
        } else {
            client.unblock(&user).await?;
            ctx.out.ok("unblock", || format!("unblocked {user}"))
        }
    })
    .await?;
    Ok(exit_code::SUCCESS)
}

pub async fn blocked(ctx: &Context) -> Result<u8, CliError> {
    ctx.with_client(Login::Normal, async |client, _| {
        for u in client.blocked().await? {
            ctx.out.emit(
                || JsonLine::new("blocked").str("user", u.as_str()).finish(),
                || u.to_string(),
            )?;
        }
        Ok(())
    })
    .await?;
    Ok(exit_code::SUCCESS)
}
