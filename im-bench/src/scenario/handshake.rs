//! `handshake`: a storm of new connections, each a full handshake (the server signs the
//! transcript with its RSA-3072 host key) and a Ping round trip, which proves the server
//! verified our Finished. Closed loop with enough connections in flight to keep every server
//! core signing. The bound, measured in the same run on the server's CPUs: RSA-PSS signatures
//! per second with the server's own key in as many threads as the server has cores.

use anyhow::Result;

use super::{closed_loop, secs};
use crate::report::Unit;
use crate::{Ctx, bounds, im};

pub async fn run(ctx: &mut Ctx) -> Result<()> {
    let (server, _) = ctx.im_server(&[]).await?;
    let cores = ctx.server_cores();
    let bound = match server.host_key_path() {
        Some(key) => {
            let r = bounds::sign(ctx.server_cpus.as_deref(), &key, cores, secs(ctx.quick, 2.0, 5.0)).await?;
            ctx.report.add("full", "rsa_signs", r.per_s, Unit::PerS);
            Some(r.per_s)
        }
        None => {
            eprintln!("no --data-dir: the RSA bound needs the server's host key; measuring without it");
            None
        }
    };

    // In flight: a few per server core keeps the signing threads busy without turning the
    // latency into pure queueing.
    let in_flight = 4 * cores + 4;
    let (addr, sources) = (server.addr, ctx.sources.clone());
    let (_, rate, h, errors) = closed_loop(in_flight, secs(ctx.quick, 4.0, 10.0), move |i| {
        let src = sources[i % sources.len()];
        async move {
            let mut c = im::connect(src, addr, None).await?;
            c.ping(1).await
        }
    })
    .await;
    let r = &mut ctx.report;
    match bound {
        Some(b) => r.add_bounded("full", "handshakes", rate, Unit::PerS, b),
        None => r.add("full", "handshakes", rate, Unit::PerS),
    }
    r.add("full", "handshake_p50", h.quantile_ms(0.5), Unit::Ms);
    r.add("full", "handshake_p99", h.quantile_ms(0.99), Unit::Ms);
    r.add("full", "in_flight", in_flight as f64, Unit::Count);
    r.add("full", "errors", errors as f64, Unit::Count);
    drop(server);
    Ok(())
}
