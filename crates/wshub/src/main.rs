//! The `wshub` command line.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use wshub::{Config, Server};

#[derive(Parser)]
#[command(
    name = "wshub",
    version,
    about = "Distributed WebSocket hub, GoHub wire-compatible"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (single node on the in-process bus by default).
    Serve {
        /// Listen address, overrides `server.addr`.
        #[arg(long)]
        addr: Option<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { addr } => {
            let mut config = Config::default();
            if let Some(addr) = addr {
                config.server.addr = addr;
            }
            let server = Server::builder().config(config).build()?;
            let running = server.bind().await.context("binding the listener")?;
            tokio::signal::ctrl_c()
                .await
                .context("waiting for ctrl-c")?;
            tracing::info!("shutting down");
            running.shutdown(Duration::from_secs(10)).await;
        }
    }
    Ok(())
}
