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
            // Several mistakes found in one file: each its own `error:` line.
            match &e {
                probegate::error::Error::Several(all) => all.iter().for_each(|e| report(e)),
                e => report(e),
            }
            cli::EXIT_ERROR
        }
    };
    std::process::exit(code);
}

/// An error's line, then each cause the line does not already say.
fn report(e: &dyn std::error::Error) {
    let mut shown = e.to_string();
    eprintln!("error: {shown}");
    let mut src = e.source();
    while let Some(s) = src {
        // Library errors display their cause inline (a one-line message for
        // report.json and the server); repeat it only when it says
        // something the line above did not.
        let text = s.to_string();
        if !shown.contains(&text) {
            eprintln!("  caused by: {text}");
        }
        shown = text;
        src = s.source();
    }
}
