//! The `joulecut` command-line tool. One file per command under `cli/`.

use std::process::ExitCode;

use clap::Parser;

// `println!` and `print!` for the whole binary: std's versions panic when stdout is gone (a reader
// that closed the pipe, a full disk); these end the process cleanly instead
// (`cli::output::write_stdout`).
macro_rules! println {
    () => {
        $crate::cli::output::write_stdout(format_args!("\n"))
    };
    ($($t:tt)*) => {
        $crate::cli::output::write_stdout(format_args!("{}\n", format_args!($($t)*)))
    };
}

macro_rules! print {
    ($($t:tt)*) => {
        $crate::cli::output::write_stdout(format_args!($($t)*))
    };
}

mod cli;

fn main() -> ExitCode {
    // candle splits element-wise ops on big tensors over its own pool of spinning threads; next
    // to rayon's workers (our kernels) that oversubscribes a small machine, and its barrier wait
    // took 4-15 % of a LeNet-5 epoch on 2 cores (+17 % samples/s without it,
    // docs/PERFORMANCE.md). Keep them on the calling thread unless the user set a count.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: first statement of main: no other thread exists yet to read the environment.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
    joulecut::checkpoint::input::guard_truncated_inputs();
    let args = match cli::Cli::try_parse() {
        Ok(a) => a,
        // --help and --version print to stdout and succeed
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            // clap's own message (one `error:` line, the usage), then a hint as every exit-2 has
            let text = e.render().to_string();
            eprintln!("{}", text.trim_end());
            eprintln!(
                "hint: `joulecut --help` lists the commands, `joulecut COMMAND --help` their flags and values"
            );
            return ExitCode::from(2);
        }
    };
    // Reuse freed tensor buffers instead of returning them to the kernel every step (25-30% on
    // an MLP train step, docs/PERFORMANCE.md).
    joulecut::ops::tune_allocator();
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            let report = cli::error::classify(&err);
            // One line: the action that failed and its causes, then a hint.
            eprintln!("error: {err:#}");
            match report.hint {
                Some(hint) => eprintln!("hint: {hint}"),
                // every bad-input exit says what to do next
                None if report.code == 2 => {
                    eprintln!("hint: `joulecut COMMAND --help` lists the flags and their values")
                }
                None => {}
            }
            ExitCode::from(report.code)
        }
    }
}
