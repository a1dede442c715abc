//! `im-client`: the command-line client. The commands live in `cli/`; this file parses the
//! arguments, runs the command on a tokio runtime, and turns its result into an exit code
//! (see `im_client::exit_code`) and, on failure, a message on stderr (a JSON object with
//! `--json`).

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use im_client::exit_code;

mod cli;

use cli::error::CliError;

fn main() -> ExitCode {
    // Clap prints usage errors and exits 2 (help and version: 0).
    let cli = cli::Cli::parse();
    let json = cli.global.json;
    init_logging(json);
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = match e.downcast_ref::<CliError>() {
                Some(CliError::BrokenPipe) => return ExitCode::SUCCESS,
                Some(e) => {
                    report(e, json);
                    e.exit_code()
                }
                None => {
                    let _ = writeln!(std::io::stderr(), "im-client: error: {e:#}");
                    exit_code::LOCAL
                }
            };
            ExitCode::from(code)
        }
    }
}

fn run(cli: cli::Cli) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(cli::run(cli))?)
}

fn report(e: &CliError, json: bool) {
    let mut err = std::io::stderr().lock();
    let _ = if json {
        writeln!(err, "{}", cli::output::error_json(e))
    } else {
        writeln!(err, "im-client: error: {e}")
    };
}

/// Logs go to stderr, filtered by IM_LOG (`warn` by default; off with --json, so stderr
/// holds only JSON objects). Nothing logged ever includes a secret.
fn init_logging(json: bool) {
    let default = if json { "off" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("IM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
