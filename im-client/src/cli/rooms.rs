//! Room commands: rooms, join, leave, members, topic, and the moderation commands.

use im_client::{Moderation, exit_code};

use super::RoomUser;
use super::context::{Context, Login, parse_room, parse_user};
use super::error::CliError;
use super::output::{clean, member_human, member_json, room_human, room_json, topic_json};

pub async fn rooms(ctx: &Context) -> Result<u8, CliError> {
    ctx.with_client(Login::Normal, async |client, _| {
        for r in client.rooms().await? {
            ctx.out.emit(|| room_json(&r), || room_human(&r))?;
        }
        Ok(())
    })
    .await?;
    Ok(exit_code::SUCCESS)
}

pub async fn join(ctx: &Context, room: &str) -> Result<u8, CliError> {
    let room = parse_room(room)?;
    ctx.with_client(Login::Normal, async |client, _| {
        client.join(&room).await?;
        ctx.out.ok("join", || format!("joined {room}"))
    })
    .await?;
    Ok(exit_code::SUCCESS)
}

pub async fn leave(ctx: &Context, room: &str) -> Result<u8, CliError> {
    let room = parse_room(room)?;
    ctx.with_client(Login::Normal, async |client, _| {
        client.leave(&room).await?;
        ctx.out.ok("leave", || format!("left {room}"))
    })
    .await?;
    Ok(exit_code::SUCCESS)
}

pub async fn members(ctx: &Context, room: &str) -> Result<u8, CliError> {
    let room = parse_room(room)?;
    ctx.with_client(Login::Normal, async |client, _| {
        for m in client.members(&room).await? {
            ctx.out.emit(|| member_json(room.as_str(), &m), || member_human(&m))?;
        }
        Ok(())
    })
    .await?;
    Ok(exit_code::SUCCESS)
}

pub async fn topic(ctx: &Context, room: &str, text: Vec<String>) -> Result<u8, CliError> {
    let room = parse_room(room)?;
    let set = (!text.is_empty()).then(|| text.join(" "));
    ctx.with_client(Login::Normal, async |client, _| {
        let topic = client.topic(&room, set.as_deref()).await?;
        ctx.out.emit(
            || topic_json(room.as_str(), topic.as_deref()),
            || match &topic {
                Some(t) => format!("{room}: {}", clean(t)),
                None => format!("{room} has no topic"),
            },
        )
    })
    .await?;
    Ok(exit_code::SUCCESS)
}

pub async fn moderate(ctx: &Context, action: Moderation, args: RoomUser) -> Result<u8, CliError> {
    let room = parse_room(&args.room)?;
    let user = parse_user(&args.user)?;
    let (command, done) = match action {
        Moderation::Kick => ("kick", "kicked from"),
        Moderation::Ban => ("ban", "banned from"),
        Moderation::Unban => ("unban", "unbanned in"),
        Moderation::Op => ("op", "made an operator of"),
        Moderation::Deop => ("deop", "no longer an operator of"),
    };
    ctx.with_client(Login::Normal, async |client, _| {
        client.moderate(action, &room, &user).await?;
        ctx.out.ok(command, || format!("{user} {done} {room}"))
    })
    .await?;
    Ok(exit_code::SUCCESS)
}
