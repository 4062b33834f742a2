//! `fstore`: run the feature store (`dev`, `serve`, `worker`, `demo`) or talk to one
//! (`register`, `get`, `fetch`, `watch`, `describe`, `ls`, `dlq`, `invalidate`, `auth`).
//!
//! Layout: this file parses the arguments, starts telemetry, calls the verb and reports
//! its failure ([`error`]: the gRPC code and message, and the exit codes).
//! - [`cmd::run`]: `dev`, `serve`, `worker`
//! - [`cmd::client`]: the verbs that call a server, over [`fstore::client::Client`]
//! - [`cmd::dlq`], [`cmd::flow`], [`cmd::demo`], [`cmd::auth`]
//! - [`output`]: tables and JSON; [`input`]: `-i name:TYPE=value` arguments

mod cmd;
mod entities;
mod error;
mod input;
mod output;
mod progress;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "fstore",
    version,
    about = "an on-demand feature store",
    after_long_help = error::EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Feature store address for client verbs [default: http://<server.listen's default>].
    #[arg(long, global = true, env = "FSTORE_ADDR")]
    addr: Option<String>,
    /// Tenant for client verbs (the server's default tenant when absent; with an API
    /// key, the key's tenant).
    #[arg(long, global = true, env = "FSTORE_TENANT")]
    tenant: Option<String>,
    /// API key for client verbs, sent as `authorization: Bearer`.
    #[arg(long, global = true, env = "FSTORE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// The CA that signed the server's certificate (an https:// address needs it).
    #[arg(long, global = true, env = "FSTORE_TLS_CA")]
    tls_ca: Option<std::path::PathBuf>,
    /// A client certificate (PEM), for servers that verify clients (mTLS).
    #[arg(long, global = true, env = "FSTORE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, global = true, env = "FSTORE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Print JSON instead of tables (and errors as JSON on stderr).
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    #[command(flatten)]
    Run(cmd::run::Verb),
    /// Runs a scripted session against an in-process server and prints every step.
    Demo,
    /// Works with flows locally, without a server or queue.
    #[command(subcommand)]
    Flow(cmd::flow::Verb),
    /// API keys: create, list, revoke.
    #[command(subcommand)]
    Auth(cmd::auth::Verb),
    #[command(flatten)]
    Client(cmd::client::Verb),
    /// Prints the shell completion script: `fstore completions bash > /etc/bash_completion.d/fstore`,
    /// or `source <(fstore completions bash)`; zsh and fish alike.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Cmd::Completions { shell } = cli.cmd {
        let mut command = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(shell, &mut command, "fstore", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    // The demo prints its own story; servers log their lifecycle.
    let default_level = if matches!(cli.cmd, Cmd::Demo) {
        "warn"
    } else {
        "info"
    };
    let filter = std::env::var("FSTORE_LOG").unwrap_or_else(|_| default_level.to_string());
    let otlp = std::env::var("FSTORE_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty());
    let _telemetry = match fstore::telemetry::init(&filter, otlp.as_deref(), "fstore") {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("warning: tracing is off: {e}");
            None
        }
    };
    let json = cli.json;
    let addr = cli
        .addr
        .unwrap_or_else(|| format!("http://{}", fstore::config::ServerConfig::default().listen));
    let target = cmd::auth::Target {
        addr: &addr,
        tenant: cli.tenant,
        api_key: cli.api_key,
        tls: fstore::client::ClientTls {
            ca_file: cli.tls_ca,
            cert_file: cli.tls_cert,
            key_file: cli.tls_key,
            domain: None,
        },
    };
    let outcome = match cli.cmd {
        Cmd::Run(verb) => cmd::run::run(verb).await,
        Cmd::Demo => cmd::demo::run().await,
        Cmd::Flow(verb) => cmd::flow::run(verb, json),
        Cmd::Auth(verb) => cmd::auth::run(target, verb, json).await,
        Cmd::Client(verb) => cmd::client::run(target, json, verb).await,
        Cmd::Completions { .. } => Ok(()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let report = error::Report::of(&e);
            if json {
                eprintln!("{}", report.json());
            } else {
                eprintln!("{}", report.text());
            }
            ExitCode::from(report.exit_code)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Each shell's script names the verbs and their flags.
    #[test]
    fn completions_cover_every_verb() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "fstore", &mut out);
            let script = String::from_utf8(out).expect("utf-8");
            for word in [
                "backfill",
                "export",
                "completions",
                "max-staleness",
                "serve",
            ] {
                assert!(script.contains(word), "{shell:?} completions lack `{word}`");
            }
        }
    }
}
