//! The `corvid` command: `serve` runs the proxy, `check` validates a config.
//!
//! Exit codes: 0 after a clean shutdown or a valid config; 1 on a config or start-up error
//! (the message names the cause); 2 on usage errors (clap's convention).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use corvid::config::Config;

#[derive(Parser)]
#[command(
    name = "corvid",
    version,
    about = "Thread-per-core caching proxy for S3"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy in the foreground (logs to stderr; RUST_LOG sets the level)
    Serve {
        /// Configuration file (TOML)
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Validate a configuration file and print what is wrong
    Check {
        /// Configuration file (TOML)
        #[arg(short, long)]
        config: PathBuf,
    },
}

#[expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the CLI's own output: `check`'s verdict on stdout, configuration errors on stderr \
              (logging is not the channel for them)"
)]
fn main() -> ExitCode {
    let cli = Cli::parse();
    // Without RUST_LOG every record passes the logger's own filter and the level is the
    // global maximum (info, or `log.level`, which a reload may change); RUST_LOG, when set,
    // filters as always and wins over `log.level`.
    let from_env = std::env::var_os("RUST_LOG").is_some();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("trace"))
        .format_timestamp_millis()
        .init();
    if !from_env {
        log::set_max_level(log::LevelFilter::Info);
    }
    match cli.command {
        Command::Check { config } => match Config::load(&config) {
            // What `serve` would refuse at start, or warn about on this machine.
            Ok(cfg) => match corvid::context::check(&cfg) {
                Ok(warnings) => {
                    // Warnings do not make a config invalid: they say how it will run here.
                    for w in warnings {
                        eprintln!("{}: warning: {w}", config.display());
                    }
                    println!("{}: ok", config.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}: invalid configuration:\n{e}", config.display());
                    ExitCode::from(1)
                }
            },
            Err(e) => {
                eprintln!("{}: invalid configuration:\n{e}", config.display());
                ExitCode::from(1)
            }
        },
        Command::Serve { config } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{}: invalid configuration:\n{e}", config.display());
                    return ExitCode::from(1);
                }
            };
            match corvid::runtime::serve(cfg, &config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    log::error!("cannot start: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
