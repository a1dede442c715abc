//! The command's errors: the library's, plus the few that only a command has (its output
//! closed, its input unreadable). Each has an exit code from `im_client::exit_code`.

use std::path::PathBuf;

use im_client::exit_code;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] im_client::Error),
    /// stdout was closed (`| head`): not an error, the command stops quietly with 0.
    #[error("standard output is closed")]
    BrokenPipe,
    #[error("cannot write to standard output: {0}")]
    Output(#[source] std::io::Error),
    /// A file or stream the user pointed us at cannot be read.
    #[error("cannot read {}: {source}", what.display())]
    Input {
        what: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl CliError {
    pub fn output(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            CliError::BrokenPipe
        } else {
            CliError::Output(e)
        }
    }

    pub fn input(what: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CliError::Input {
            what: what.into(),
            source,
        }
    }

    pub fn usage(text: impl Into<String>) -> Self {
        CliError::Client(im_client::Error::Usage(text.into()))
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Client(e) => e.exit_code(),
            CliError::BrokenPipe => exit_code::SUCCESS,
            CliError::Output(_) | CliError::Input { .. } => exit_code::LOCAL,
        }
    }

    pub fn code_name(&self) -> &'static str {
        match self {
            CliError::Client(e) => e.code_name(),
            CliError::BrokenPipe => "broken_pipe",
            CliError::Output(_) | CliError::Input { .. } => "local",
        }
    }

    pub fn retry_after_ms(&self) -> Option<u32> {
        match self {
            CliError::Client(e) => e.retry_after_ms(),
            _ => None,
        }
    }
}
