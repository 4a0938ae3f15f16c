//! `joulecut completions SHELL`: the shell completion script, generated from the same clap
//! definitions the parser uses, so it never falls behind a flag.

use std::process::ExitCode;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

/// Arguments of `joulecut completions`.
#[derive(Debug, Args)]
#[command(after_long_help = "Examples:
  joulecut completions bash > ~/.local/share/bash-completion/completions/joulecut
  joulecut completions zsh > \"${fpath[1]}/_joulecut\"
  joulecut completions fish > ~/.config/fish/completions/joulecut.fish")]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    shell: Shell,
}

/// Prints the script.
pub fn run(a: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = super::Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "joulecut", &mut buf);
    print!("{}", String::from_utf8_lossy(&buf));
    Ok(ExitCode::SUCCESS)
}
