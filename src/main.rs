//! The `probegate` binary: the command line is this crate's own (its flags,
//! rendering and exit codes), as ripgrep keeps its flags in its binary; the
//! gate itself is the library's.

use clap::Parser;

mod cli;

use cli::Cli;

fn main() {
    let cli = Cli::parse();
    let code = match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                eprintln!("  caused by: {s}");
                src = s.source();
            }
            cli::EXIT_ERROR
        }
    };
    std::process::exit(code);
}
