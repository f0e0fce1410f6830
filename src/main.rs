use clap::Parser;
use probegate::cli::{self, Cli};

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
