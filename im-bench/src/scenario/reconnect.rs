//! `reconnect`: first logins by password (full handshake, Argon2id verification on the
//! server, a device record and a ticket written), then reconnects by resumption ticket
//! (X25519 and HKDF only, the ticket looked up, `LoginTicket`), each closed loop with several
//! connections in flight, each counted once the session answers a Ping (so its catch-up is
//! done). Beside the password logins: Argon2id verifications per second on the server's CPUs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Result;
use im_proto::msg::DeviceId;

use super::{closed_loop, secs};
use crate::report::Unit;
use crate::seed::{Account, user_name};
use crate::{Ctx, bounds, im};

pub async fn run(ctx: &mut Ctx) -> Result<()> {
    let users = if ctx.quick { 500 } else { 5_000 };
    let names: Vec<_> = (0..users).map(|i| user_name("p", i)).collect();
    let (server, accounts) = ctx.im_server(&names).await?;
    let accounts = Arc::new(accounts);
    let addr = server.addr;
    let cores = ctx.server_cores();

    let argon = bounds::argon2(ctx.server_cpus.as_deref(), cores, secs(ctx.quick, 1.5, 4.0)).await?;
    ctx.report.add("password", "argon2_verifies", argon.per_s, Unit::PerS);

    // Password logins: Argon2 runs `cores` at a time on the server; a few more in flight keep
    // it busy.
    let next = Arc::new(AtomicUsize::new(0));
    let sources = ctx.sources.clone();
    let (n, rate, h, errors) = closed_loop(2 * cores + 2, secs(ctx.quick, 3.0, 10.0), {
        let (next, names) = (next.clone(), Arc::new(names));
        move |i| {
            let (next, names, src) = (next.clone(), names.clone(), sources[i % sources.len()]);
            async move {
                let u = next.fetch_add(1, Ordering::Relaxed) % names.len();
                let mut c = im::connect(src, addr, None).await?;
                c.login_password(&names[u], DeviceId::random()).await?;
                c.ping(2).await
            }
        }
    })
    .await;
    let r = &mut ctx.report;
    r.add_bounded("password", "logins", rate, Unit::PerS, argon.per_s);
    r.add("password", "login_p50", h.quantile_ms(0.5), Unit::Ms);
    r.add("password", "login_p99", h.quantile_ms(0.99), Unit::Ms);
    r.add("password", "count", n as f64, Unit::Count);
    r.add("password", "errors", errors as f64, Unit::Count);

    // Reconnects by ticket, round robin over the seeded devices.
    let sources = ctx.sources.clone();
    let in_flight = 64;
    let (n, rate, h, errors) = closed_loop(in_flight, secs(ctx.quick, 4.0, 10.0), {
        let (next, accounts) = (Arc::new(AtomicUsize::new(0)), accounts.clone());
        move |i| {
            let (next, accounts, src) = (next.clone(), accounts.clone(), sources[i % sources.len()]);
            async move {
                let a: &Account = &accounts[next.fetch_add(1, Ordering::Relaxed) % accounts.len()];
                let mut c = im::connect(src, addr, Some(&a.ticket)).await?;
                c.login_ticket().await?;
                c.ping(3).await
            }
        }
    })
    .await;
    let r = &mut ctx.report;
    r.add("ticket", "reconnects", rate, Unit::PerS);
    r.add("ticket", "reconnect_p50", h.quantile_ms(0.5), Unit::Ms);
    r.add("ticket", "reconnect_p99", h.quantile_ms(0.99), Unit::Ms);
    r.add("ticket", "in_flight", in_flight as f64, Unit::Count);
    r.add("ticket", "count", n as f64, Unit::Count);
    r.add("ticket", "errors", errors as f64, Unit::Count);
    drop(server);
    Ok(())
}
