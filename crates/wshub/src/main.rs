//! The `wshub` command line: `serve`, `check-config`, `token`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, reload};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use wshub::config::LogFormat;
use wshub::{Config, Server};

#[derive(Parser)]
#[command(
    name = "wshub",
    version,
    about = "Distributed WebSocket hub, GoHub wire-compatible",
    long_about = "Distributed WebSocket hub, GoHub wire-compatible.\n\n\
        Configuration: defaults <- YAML file (--config) <- WSHUB_* environment \
        (WSHUB_SERVER__ADDR, `__` for nesting) <- flags."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (single node on the in-process bus unless the config says otherwise).
    ///
    /// The config file is watched: live keys (limits, auth, rooms, admin, log.level) apply
    /// without dropping connections; SIGHUP reloads too.
    Serve {
        /// YAML config file (GoHub's config.yaml keys are accepted).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Listen address, overrides `server.addr`.
        #[arg(long)]
        addr: Option<String>,
        /// Serve this directory's files at `/` (overrides `server.static_dir`).
        #[arg(long = "static", value_name = "DIR")]
        static_dir: Option<String>,
    },
    /// Validate a config file and print the effective configuration (secrets masked).
    ///
    /// Exits 1 with the reasons when it is invalid.
    CheckConfig {
        /// YAML config file.
        file: PathBuf,
    },
    /// Print a JWT signed with the configured `auth.secret_key` (HS256), for development.
    Token {
        /// The client id (`user_id` and `sub` claims).
        #[arg(long)]
        user: String,
        /// A permission, e.g. `join:room` or `send:message:lobby` (repeatable).
        #[arg(long = "perm", value_name = "PERMISSION")]
        perms: Vec<String>,
        /// Lifetime, e.g. `1h`, `30m`.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Config file to take `auth.secret_key` and `auth.issuer` from.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve {
            config,
            addr,
            static_dir,
        } => serve(config, addr, static_dir),
        Command::CheckConfig { file } => check_config(&file),
        Command::Token {
            user,
            perms,
            ttl,
            config,
        } => token(&user, &perms, ttl, config.as_deref()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(
    file: Option<PathBuf>,
    addr: Option<String>,
    static_dir: Option<String>,
) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(file.as_deref())?;
    if let Some(addr) = addr {
        config.server.addr = addr;
    }
    if let Some(dir) = static_dir {
        config.server.static_dir = dir;
    }
    config.validate()?;
    let telemetry = init_telemetry(&config)?;
    let tracer = telemetry.tracer;
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let server = Server::builder()
            .config(config.clone())
            .log_level_reloader(telemetry.set_level)
            .build()?;
        let listener =
            tokio::net::TcpListener::bind(config.server.socket_addr().map_err(anyhow::Error::msg)?)
                .await
                .with_context(|| format!("binding {}", config.server.addr))?;
        let running = server.serve(listener).await?;
        if let Some(file) = &file {
            running
                .handle()
                .watch_config(file)
                .with_context(|| format!("watching {}", file.display()))?;
        }
        shutdown_signal().await;
        let current = running.handle().config();
        let (drain, hard_stop) = (current.shutdown.drain_period, current.shutdown.timeout);
        tracing::info!(drain_period = ?drain, timeout = ?hard_stop, "shutting down gracefully; a second signal stops at once");
        tokio::select! {
            _ = running.drain(drain, hard_stop) => {}
            _ = tokio::time::sleep(hard_stop + Duration::from_secs(1)) => {
                tracing::warn!("shutdown.timeout reached; stopping now");
            }
            _ = shutdown_signal() => tracing::warn!("second signal; stopping now"),
        }
        Ok::<_, anyhow::Error>(())
    })?;
    if let Some(tracer) = tracer
        && let Err(e) = tracer.shutdown()
    {
        eprintln!("flushing traces failed: {e}");
    }
    Ok(ExitCode::SUCCESS)
}

/// What [`init_telemetry`] installed.
struct Telemetry<F> {
    /// Changes the log level on reload.
    set_level: F,
    /// The OTLP exporter, flushed at exit.
    tracer: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

/// Installs the subscriber: logs (level from `log.level`, reloadable) and, when
/// `tracing.otlp_endpoint` is set, span export. Each has its own filter, so the log level does
/// not decide which spans are exported.
fn init_telemetry(
    config: &Config,
) -> anyhow::Result<Telemetry<impl Fn(&str) -> Result<(), String> + Send + Sync + 'static>> {
    // RUST_LOG wins over log.level when set (handy for debugging one module).
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    let (filter, handle) = reload::Layer::new(filter);
    let logs = match config.log.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .boxed(),
        // Colours only on a terminal, not in files and pipes.
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .boxed(),
    };
    let registry = tracing_subscriber::registry().with(logs.with_filter(filter));
    let (spans, tracer) = wshub::telemetry::otlp_layer(&config.tracing)
        .map_err(anyhow::Error::msg)?
        .unzip();
    registry.with(spans).init();
    if tracer.is_some() {
        tracing::info!(endpoint = %wshub::config::mask_userinfo(&config.tracing.otlp_endpoint), sample_ratio = config.tracing.sample_ratio, "exporting traces over OTLP");
    }
    Ok(Telemetry {
        set_level: move |level: &str| {
            let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
            handle.reload(filter).map_err(|e| e.to_string())
        },
        tracer,
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn check_config(file: &std::path::Path) -> anyhow::Result<ExitCode> {
    match Config::load(Some(file)) {
        Ok(config) => {
            println!("{}", serde_json::to_string_pretty(&config.masked())?);
            eprintln!("{}: valid", file.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    user_id: &'a str,
    sub: &'a str,
    permissions: &'a [String],
    iss: &'a str,
    iat: u64,
    exp: u64,
}

fn token(
    user: &str,
    perms: &[String],
    ttl: Duration,
    file: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(file)?;
    if config.auth.secret_key.is_empty() {
        anyhow::bail!(
            "auth.secret_key is not set (in the config file or WSHUB_AUTH__SECRET_KEY); it is the key tokens are signed with"
        );
    }
    if let Err(bad) = wshub::auth::Permissions::parse(perms) {
        anyhow::bail!("unknown permission {bad:?}");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let claims = Claims {
        user_id: user,
        sub: user,
        permissions: perms,
        iss: &config.auth.issuer,
        iat: now,
        exp: now + ttl.as_secs(),
    };
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(config.auth.secret_key.as_bytes()),
    )?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}
