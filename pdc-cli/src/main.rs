//! `pdc`: the sync server, its administration, an end-to-end demo, a load
//! generator, and terminal store inspection.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// `println!` that returns the write error (`?`) instead of panicking: a
/// reader that closes the pipe (`pdc terminal list | head`) ends the verb
/// quietly (see `main`).
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($t)*)?;
    }};
}

mod admin;
mod assets;
mod demo;
mod error;
mod inspect;
mod loadtest;
mod proxy;
mod serve;
mod web;

pub use error::CliError;

/// A mutex's guard; every critical section here is a single update, so a
/// poisoned lock still holds consistent state.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// pdc: an offline-first engine for point-of-sale terminals.
#[derive(Debug, Parser)]
#[command(name = "pdc", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the server's ledger is.
#[derive(Debug, Clone, Args)]
struct LedgerArgs {
    /// TOML configuration file (see `pdc_server::ServerConfig`).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// The embedded ledger file (used when no database URL is given).
    #[arg(long, global = true)]
    ledger: Option<PathBuf>,
    /// PostgreSQL URL, e.g. postgres://postgres@127.0.0.1/test.
    #[arg(long, global = true, env = "PDC_DATABASE_URL")]
    database_url: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the sync server (embedded ledger by default, PostgreSQL with
    /// --database-url). Prints `listening on http://ADDR` when ready; stops
    /// gracefully on Ctrl-C or SIGTERM, finishing in-flight batches.
    Serve {
        #[command(flatten)]
        ledger: LedgerArgs,
        /// Address to listen on (default 127.0.0.1:8440; port 0 = any).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Most items per push.
        #[arg(long)]
        max_items: Option<usize>,
        /// Sustained requests per second per terminal.
        #[arg(long)]
        rate: Option<u32>,
        /// Burst of requests per terminal.
        #[arg(long)]
        burst: Option<u32>,
        /// An origin whose pages may call the API from a browser (CORS),
        /// e.g. `https://till.example.com`; repeat for more.
        #[arg(long = "cors-origin")]
        cors_origins: Vec<String>,
        /// Also serves the web till at / (same origin as the API).
        #[arg(long)]
        web: bool,
        /// Where the engine's wasm bundle is (`cargo xtask browser` builds
        /// it).
        #[arg(long, default_value = "pdc-web/pkg")]
        web_pkg: std::path::PathBuf,
    },
    /// Registers, lists and revokes terminals and their tokens. With the
    /// embedded ledger, run these while the server is stopped.
    Terminal {
        #[command(flatten)]
        ledger: LedgerArgs,
        #[command(subcommand)]
        action: TerminalAction,
    },
    /// What the server's ledger holds (read-only; with the embedded
    /// ledger, run it while the server is stopped).
    Ledger {
        #[command(flatten)]
        ledger: LedgerArgs,
        #[command(subcommand)]
        action: LedgerAction,
    },
    /// Imports reference data (products, users, config) from JSON; bumps
    /// the dataset's version so terminals pull the change.
    Dataset {
        #[command(flatten)]
        ledger: LedgerArgs,
        #[command(subcommand)]
        action: DatasetAction,
    },
    /// End-to-end demo: a server, N terminals with their own stores, a
    /// trading session through outages, slow links and lost responses, and
    /// a report. Exits non-zero if a sale was lost or applied twice.
    Demo(demo::DemoArgs),
    /// Drives a running server with simulated terminals over HTTP and checks
    /// the server's counts against what was sent.
    Loadtest(loadtest::LoadArgs),
    /// Shows a terminal store: pending items by priority, dead letters,
    /// dataset versions, users and lockouts.
    Inspect {
        /// The terminal's store file (an encrypted one: its key as 64 hex
        /// digits in the PDC_STORE_KEY environment variable).
        store: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Moves dead letters back to the outbox of a terminal store.
    Requeue {
        /// The terminal's store file.
        store: PathBuf,
        /// Local ids of the dead letters.
        #[arg(required = true)]
        ids: Vec<u64>,
    },
}

#[derive(Debug, Subcommand)]
enum TerminalAction {
    /// Registers a terminal and prints its token (shown once).
    Add {
        /// Terminal id (A-Z a-z 0-9 . _ -), or a prefix with --count.
        id: String,
        /// Register ID-0001 … ID-NNNN instead.
        #[arg(long)]
        count: Option<usize>,
        /// Write `id token` lines to this file (mode 0600) instead of stdout.
        #[arg(long)]
        tokens_file: Option<PathBuf>,
        /// The chain's store the terminal sells in: it pulls the store's
        /// prices, assortment, staff and config over the chain's.
        #[arg(long)]
        store: Option<String>,
        /// The store's region (its overrides sit between the chain's and
        /// the store's).
        #[arg(long)]
        region: Option<String>,
    },
    /// Moves a terminal to another store or region (its next pull gets the
    /// new view; running servers on the same database use it within 1 s).
    Place {
        /// Terminal id.
        id: String,
        /// The store (none: the chain's records only).
        #[arg(long)]
        store: Option<String>,
        /// The region.
        #[arg(long)]
        region: Option<String>,
    },
    /// Lists terminals (never their tokens).
    List,
    /// Shows one terminal: registration, status, and every store id it has
    /// pushed from (a new one means its till store was replaced).
    Show {
        /// Terminal id.
        id: String,
    },
    /// Revokes a terminal's token (running servers on the same database
    /// refuse it within 1 s).
    Revoke {
        /// Terminal id.
        id: String,
    },
    /// Gives a terminal a new token and prints it (shown once); the old
    /// one stops working within 1 s on every server on the same database.
    Rotate {
        /// Terminal id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum LedgerAction {
    /// A terminal's items as the ledger recorded them: store, local id,
    /// server sequence or refusal, time; the last `--limit` (default 100).
    Show {
        /// Terminal id.
        #[arg(long)]
        terminal: String,
        /// How many of the latest items.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DatasetAction {
    /// Replaces a dataset's chain layer, or with --store / --region that
    /// store's or region's overrides, with the contents of a JSON file
    /// (formats in docs/SERVER.md).
    Import {
        /// products, users or config.
        name: String,
        /// The JSON file.
        file: PathBuf,
        /// Import the overrides of this store.
        #[arg(long, conflicts_with = "region")]
        store: Option<String>,
        /// Import the overrides of this region.
        #[arg(long)]
        region: Option<String>,
    },
    /// Shows each dataset's version and size.
    Show,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = match cli.command {
        Command::Serve { .. } => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log)),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal (and never with NO_COLOR).
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(code) => code,
        // The reader went away (`| head`): nothing left to say to anyone.
        Err(CliError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<ExitCode, CliError> {
    match command {
        Command::Serve {
            ledger,
            listen,
            max_items,
            rate,
            burst,
            cors_origins,
            web,
            web_pkg,
        } => {
            let mut config = admin::config(&ledger)?;
            if let Some(l) = listen {
                config.listen = l;
            }
            if let Some(m) = max_items {
                config.limits.max_items = m;
            }
            if let Some(r) = rate {
                config.limits.rate_per_sec = r;
            }
            if let Some(b) = burst {
                config.limits.burst = b;
            }
            config.limits.cors_origins.extend(cors_origins);
            let extra = if web {
                web::routes(&web_pkg)?
            } else {
                axum::Router::new()
            };
            serve::serve(config, extra).await?;
        }
        Command::Terminal { ledger, action } => admin::terminal(&ledger, action).await?,
        Command::Dataset { ledger, action } => admin::dataset(&ledger, action).await?,
        Command::Ledger { ledger, action } => admin::ledger_cmd(&ledger, action).await?,
        Command::Demo(args) => return demo::main(args).await,
        Command::Loadtest(args) => return loadtest::main(args).await,
        Command::Inspect { store, json } => inspect::inspect(&store, json)?,
        Command::Requeue { store, ids } => inspect::requeue(&store, &ids)?,
    }
    Ok(ExitCode::SUCCESS)
}
