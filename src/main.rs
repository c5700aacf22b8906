//! The `engram` command line: serve over stdio (what a host launches) or HTTP,
//! run one operation, list tools, regenerate schemas.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use engram::app::OpenError;
use engram::catalog::catalog;
use engram::config::{Config, Durability, NamespaceMode, defaults, validate_namespace};
use engram::ops::discovery::Detail;
use engram::ops::registry::{REGENERATE_SCHEMAS, registry, schema_document};
use engram::pipeline::Engine;
use engram::server::auth::AuthMode;
use engram::server::http::HttpOptions;

/// Commands that manage a data dir beside the server: tokens, audit, health.
mod cli {
    pub mod admin;
}
use cli::admin;

#[derive(Parser)]
#[command(
    name = "engram",
    version,
    about = "A memory server for AI agents, over MCP"
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args)]
struct GlobalArgs {
    /// Where engram keeps its data [default: the platform's user data dir, e.g. ~/.local/share/engram]
    #[arg(long, env = "ENGRAM_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Keep memory in this PostgreSQL database (postgres://user:password@host/db) instead of
    /// the data dir's sqlite file; many nodes may share it. The data dir keeps the search index.
    #[arg(
        long = "store",
        env = "ENGRAM_STORE",
        value_name = "URL",
        global = true
    )]
    store_url: Option<String>,
    /// Namespace for this process's sessions, or `auto` (the client's first root folder name).
    #[arg(
        long,
        env = "ENGRAM_NAMESPACE",
        default_value = "default",
        global = true
    )]
    namespace: String,
    /// Tools each session lists: core, all, compat, or a comma-separated list of layers.
    #[arg(long, env = "ENGRAM_TOOLS", default_value = defaults::TOOLS, global = true)]
    tools: String,
    /// full: every acknowledged write survives power loss; normal: survives crashes only.
    #[arg(
        long,
        env = "ENGRAM_DURABILITY",
        value_enum,
        default_value = "full",
        global = true
    )]
    durability: Durability,
    /// The search index commits at least this often while changes are pending (ms).
    #[arg(
        long,
        env = "ENGRAM_INDEX_COMMIT_MS",
        default_value_t = defaults::INDEX_COMMIT_MS,
        global = true
    )]
    index_commit_ms: u64,
    /// ... or as soon as this many changes are pending.
    #[arg(
        long,
        env = "ENGRAM_INDEX_COMMIT_DOCS",
        default_value_t = defaults::INDEX_COMMIT_DOCS,
        global = true
    )]
    index_commit_docs: usize,
    /// Most read answers the query cache keeps (0 turns the cache off).
    #[arg(
        long,
        env = "ENGRAM_CACHE_CAPACITY",
        default_value_t = defaults::CACHE_CAPACITY,
        global = true
    )]
    cache_capacity: usize,
    /// Most megabytes of answers the query cache keeps.
    #[arg(long, env = "ENGRAM_CACHE_MB", default_value_t = defaults::CACHE_MB, global = true)]
    cache_mb: usize,
    /// Calls per second each session may make (0: unlimited).
    #[arg(
        long,
        env = "ENGRAM_RATE_LIMIT",
        default_value_t = defaults::RATE_LIMIT,
        global = true
    )]
    rate_limit: u32,
    /// Calls a session may make in a burst above --rate-limit.
    #[arg(
        long,
        env = "ENGRAM_RATE_BURST",
        default_value_t = defaults::RATE_BURST,
        global = true
    )]
    rate_burst: u32,
    /// Log filter for stderr (tracing syntax: warn, info, engram=debug, ...).
    #[arg(
        long,
        env = "ENGRAM_LOG",
        default_value = "info,rmcp=warn",
        global = true
    )]
    log: String,
}

#[derive(Subcommand)]
enum Command {
    /// Serve MCP over stdio (the default), or Streamable HTTP with --http.
    Serve {
        /// Serve Streamable HTTP at this address (path /mcp, plus /health).
        #[arg(long, value_name = "ADDR")]
        http: Option<SocketAddr>,
        /// Extra Host header values to accept (needed when binding a non-loopback address).
        #[arg(long = "allowed-host", value_name = "HOST")]
        allowed_hosts: Vec<String>,
        /// Browser origins allowed besides loopback ones, e.g. https://app.example.com (others get 403).
        #[arg(long = "allowed-origin", value_name = "ORIGIN")]
        allowed_origins: Vec<String>,
        /// Most HTTP sessions open at once; an initialize over it gets 503.
        #[arg(long, env = "ENGRAM_MAX_SESSIONS", default_value_t = engram::server::http::DEFAULT_MAX_SESSIONS)]
        max_sessions: usize,
        /// An HTTP session idle this many seconds is closed.
        #[arg(long, env = "ENGRAM_SESSION_IDLE_SECS", default_value_t = engram::server::http::DEFAULT_SESSION_IDLE_SECS)]
        session_idle_secs: u64,
        /// When HTTP requests need `Authorization: Bearer <token>`: auto (once any token
        /// was made, and always off loopback) or required (always).
        #[arg(long, env = "ENGRAM_AUTH", value_enum, default_value = "auto")]
        auth: AuthArg,
        /// Serve HTTP without tokens, even on a non-loopback address: anyone who reaches
        /// it reads and writes every namespace.
        #[arg(long, env = "ENGRAM_INSECURE_NO_AUTH")]
        insecure_no_auth: bool,
        /// Also count calls per namespace in /metrics (reading it then needs an admin token).
        #[arg(long, env = "ENGRAM_METRICS_NAMESPACES")]
        metrics_namespaces: bool,
    },
    /// Make, list and revoke the access tokens HTTP clients present.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Print the audit trail: who wrote what, newest first (the namespace's, or every one's).
    Audit {
        #[command(flatten)]
        args: admin::AuditArgs,
    },
    /// Create or bring up to date the store's schema (sqlite or --store's PostgreSQL) and list
    /// its migrations. Every start migrates too; this is for deploying before the nodes.
    Migrate,
    /// Check a running HTTP server: exits 0 when its /health answers (for container health checks).
    Health {
        #[arg(long, default_value = "http://127.0.0.1:8765/health")]
        url: String,
    },
    /// Run one operation against the data dir and print its JSON answer.
    Call {
        /// Operation name, e.g. episodic_remember.
        operation: String,
        /// Arguments as a JSON object.
        #[arg(default_value = "{}")]
        arguments: String,
    },
    /// Import memory from another tool's file into the namespace (--namespace).
    Import {
        /// The file's format.
        #[arg(long, value_enum, default_value = "server-memory")]
        format: FormatArg,
        /// The file to read (the reference memory server's memory.jsonl).
        file: PathBuf,
    },
    /// Export the namespace's memory in another tool's format.
    Export {
        /// The format to write.
        #[arg(long, value_enum, default_value = "server-memory")]
        format: FormatArg,
        /// Write here instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// List the operations engram offers.
    Tools {
        #[arg(long, value_enum, default_value = "summary")]
        detail: DetailArg,
    },
    /// Check or regenerate the JSON Schemas in schemas/.
    Schemas {
        /// Rewrite the files (otherwise only check they are current).
        #[arg(long)]
        write: bool,
        #[arg(long, default_value = "schemas")]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a token for one namespace and print it (once: only its hash is kept).
    Create {
        /// What the token may do: read (read operations), write (reads and writes),
        /// admin (also maintenance and other namespaces).
        #[arg(long, value_enum)]
        scope: ScopeArg,
        /// A name for the token in lists and the audit trail [default: <namespace>-<scope>-<id>].
        #[arg(long)]
        label: Option<String>,
        /// The token stops working after this long (30d, 12h, 2w) or at this time (RFC 3339).
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
    },
    /// List the tokens (never the tokens themselves).
    List {
        /// One JSON object a line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by label or id: its next request is refused.
    Revoke { label_or_id: String },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ScopeArg {
    Read,
    Write,
    Admin,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum AuthArg {
    Auto,
    Required,
}

/// Formats memory moves in.
#[derive(Clone, Copy, clap::ValueEnum)]
enum FormatArg {
    /// The reference MCP memory server's JSON Lines file (@modelcontextprotocol/server-memory).
    ServerMemory,
    /// engram's own JSON Lines, every layer (meta_export's format); a file ending in .zst is zstd-compressed.
    Engram,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DetailArg {
    Name,
    Summary,
    Full,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Everything engram creates (store, index, socket, keys) is the user's alone:
    // memories are private, whatever umask the host was started with.
    #[cfg(unix)]
    // SAFETY: umask only swaps the process's file mode mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
    // stdout belongs to the protocol in stdio mode: logs only ever go to stderr.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.global.log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(false)
        .init();
    // Before any other thread starts (and after logging, so a failure is seen):
    // the allocator's parameters are set once.
    engram::heap::tune();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("engram: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn config(global: &GlobalArgs) -> anyhow::Result<Config> {
    let data_dir = global
        .data_dir
        .clone()
        .unwrap_or_else(Config::default_data_dir);
    let mut config = Config::new(data_dir);
    config.store_url = global.store_url.clone().filter(|u| !u.is_empty());
    config.namespace = match global.namespace.as_str() {
        "auto" => NamespaceMode::Auto,
        ns => {
            validate_namespace(ns).map_err(anyhow::Error::msg)?;
            NamespaceMode::Fixed(ns.to_string())
        }
    };
    config.tools = global.tools.clone();
    config.durability = global.durability;
    config.index_commit_interval_ms = global.index_commit_ms;
    config.index_commit_max_docs = global.index_commit_docs;
    config.cache_capacity = global.cache_capacity;
    config.cache_max_bytes = global.cache_mb * 1024 * 1024;
    config.rate_limit_per_second = global.rate_limit;
    config.rate_limit_burst = global.rate_burst;
    Ok(config)
}

/// The namespace a one-shot command works in (`auto` has no client roots: default).
fn fixed_namespace(config: &Config) -> String {
    match &config.namespace {
        NamespaceMode::Fixed(ns) => ns.clone(),
        NamespaceMode::Auto => engram::config::DEFAULT_NAMESPACE.to_string(),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Runs the subcommand given, or serves over stdio when none is.
fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let command = cli.command.unwrap_or(Command::Serve {
        http: None,
        allowed_hosts: Vec::new(),
        allowed_origins: Vec::new(),
        max_sessions: engram::server::http::DEFAULT_MAX_SESSIONS,
        session_idle_secs: engram::server::http::DEFAULT_SESSION_IDLE_SECS,
        auth: AuthArg::Auto,
        insecure_no_auth: false,
        metrics_namespaces: false,
    });
    let global = &cli.global;
    match command {
        Command::Serve {
            http,
            allowed_hosts,
            allowed_origins,
            max_sessions,
            session_idle_secs,
            auth,
            insecure_no_auth,
            metrics_namespaces,
        } => {
            let opts = HttpOptions {
                allowed_hosts,
                allowed_origins,
                max_sessions,
                session_idle: std::time::Duration::from_secs(session_idle_secs),
                auth: match (insecure_no_auth, auth) {
                    (true, _) => AuthMode::Off,
                    (false, AuthArg::Auto) => AuthMode::Auto,
                    (false, AuthArg::Required) => AuthMode::Required,
                },
                metrics_namespaces,
            };
            serve(global, http, opts)
        }
        Command::Token { command } => admin::token(global, command),
        Command::Audit { args } => admin::audit(global, args),
        Command::Migrate => admin::migrate(global),
        Command::Health { url } => admin::health(&url),
        Command::Call {
            operation,
            arguments,
        } => call(global, &operation, &arguments),
        Command::Import { format, file } => import(global, format, &file),
        Command::Export { format, out } => export(global, format, out.as_deref()),
        Command::Tools { detail } => tools(global, detail),
        Command::Schemas { write, dir } => schemas(write, &dir),
    }
}

/// Opens the data dir, runs `work` with the engine, and shuts the engine down
/// (index committed, store closed) before handing back what `work` answered.
async fn with_engine<T>(config: Config, work: impl AsyncFnOnce(&Engine) -> T) -> anyhow::Result<T> {
    let app = Engine::open(config).await?;
    let result = work(&app).await;
    let shutdown = app.clone();
    tokio::task::spawn_blocking(move || shutdown.shutdown()).await?;
    Ok(result)
}

/// `engram serve`: MCP over stdio, or over HTTP at `http`. A stdio server
/// whose data dir another process owns forwards its session there.
fn serve(
    global: &GlobalArgs,
    http: Option<SocketAddr>,
    opts: HttpOptions,
) -> anyhow::Result<ExitCode> {
    let config = config(global)?;
    runtime()?.block_on(async move {
        let app = match Engine::open(config.clone()).await {
            Ok(app) => app,
            // Another host's engram owns this data dir: share it.
            Err(OpenError::Locked { .. }) if http.is_none() => {
                return engram::server::forward::forward_stdio(config).await;
            }
            Err(e) => return Err(e.into()),
        };
        match http {
            None => engram::server::stdio::serve(app).await,
            Some(addr) => engram::server::http::serve(app, addr, opts).await,
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `engram call`: runs one operation and prints its JSON answer; a failed
/// operation exits with 2.
fn call(global: &GlobalArgs, operation: &str, arguments: &str) -> anyhow::Result<ExitCode> {
    let config = config(global)?;
    let args: serde_json::Value = serde_json::from_str(arguments)
        .context("arguments must be a JSON object, e.g. '{\"content\": \"...\"}'")?;
    let namespace = fixed_namespace(&config);
    runtime()?.block_on(async move {
        let result = with_engine(config, async move |app: &Engine| {
            let session = app.new_session();
            session.set_namespace(namespace);
            app.call(&session, operation, args).await
        })
        .await?;
        match result {
            Ok(value) => {
                println!("{}", serde_json::to_string_pretty(&value)?);
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("engram: {operation}: {e}");
                Ok(ExitCode::from(2))
            }
        }
    })
}

/// `engram import`: reads another tool's file into the namespace and says
/// what it added.
fn import(global: &GlobalArgs, format: FormatArg, file: &Path) -> anyhow::Result<ExitCode> {
    if let FormatArg::Engram = format {
        return import_engram(global, file);
    }
    let config = config(global)?;
    let namespace = fixed_namespace(&config);
    let reader = std::io::BufReader::new(
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?,
    );
    runtime()?.block_on(async move {
        let result = with_engine(config, async |app: &Engine| {
            engram::interop::import_server_memory(app.app(), &namespace, reader).await
        })
        .await?;
        let summary = result.with_context(|| format!("importing {}", file.display()))?;
        eprintln!(
            "imported {} into namespace {namespace:?}: {} entities, {} observations added to \
             existing entities, {} relations; {} already present, {} lines of other types skipped",
            file.display(),
            summary.entities_created,
            summary.observations_added,
            summary.relations_created,
            summary.duplicates,
            summary.skipped_lines
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// `engram export`: writes the namespace's memory in another tool's format,
/// to `out` or standard output.
fn export(global: &GlobalArgs, format: FormatArg, out: Option<&Path>) -> anyhow::Result<ExitCode> {
    if let FormatArg::Engram = format {
        return export_engram(global, out);
    }
    let config = config(global)?;
    let namespace = fixed_namespace(&config);
    runtime()?.block_on(async move {
        let mut buffer = Vec::new();
        let result = with_engine(config, async |app: &Engine| {
            engram::interop::export_server_memory(app.app(), &namespace, &mut buffer).await
        })
        .await?;
        let lines = result?;
        match out {
            Some(path) => std::fs::write(path, &buffer)
                .with_context(|| format!("cannot write {}", path.display()))?,
            None => {
                use std::io::Write;
                std::io::stdout().write_all(&buffer)?;
            }
        }
        eprintln!("exported {lines} lines from namespace {namespace:?}");
        Ok(ExitCode::SUCCESS)
    })
}

/// `engram import --format engram`: a whole export into the namespace, in
/// one transaction.
fn import_engram(global: &GlobalArgs, file: &Path) -> anyhow::Result<ExitCode> {
    let config = config(global)?;
    let namespace = fixed_namespace(&config);
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    runtime()?.block_on(async move {
        let result = with_engine(config, async |app: &Engine| {
            let limits = &app.app().config().limits;
            engram::interop::engram::import_all(app.app().store(), &namespace, &bytes, limits).await
        })
        .await?;
        let (records, imported) = result
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("importing {}", file.display()))?;
        let created = engram::interop::engram::created(&imported);
        eprintln!(
            "imported {} into namespace {namespace:?}: {records} records read, {created} stored, \
             {} already present",
            file.display(),
            records as u64 - created
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// `engram export --format engram`: the whole namespace, every layer, to `out`
/// (zstd-compressed when its name ends in `.zst`) or standard output.
fn export_engram(global: &GlobalArgs, out: Option<&Path>) -> anyhow::Result<ExitCode> {
    let config = config(global)?;
    let namespace = fixed_namespace(&config);
    let compress = out.is_some_and(|p| p.extension().is_some_and(|e| e == "zst"));
    runtime()?.block_on(async move {
        let result = with_engine(config, async |app: &Engine| {
            engram::interop::engram::export_all(app.app().store(), &namespace, compress).await
        })
        .await?;
        let (bytes, records) = result?;
        match out {
            Some(path) => std::fs::write(path, &bytes)
                .with_context(|| format!("cannot write {}", path.display()))?,
            None => {
                use std::io::Write;
                std::io::stdout().write_all(&bytes)?;
            }
        }
        eprintln!("exported {records} records from namespace {namespace:?}");
        Ok(ExitCode::SUCCESS)
    })
}

/// `engram tools`: the catalog's operations at the detail asked, `*` marking
/// those `--tools` lists.
fn tools(global: &GlobalArgs, detail: DetailArg) -> anyhow::Result<ExitCode> {
    let detail = match detail {
        DetailArg::Name => Detail::Name,
        DetailArg::Summary => Detail::Summary,
        DetailArg::Full => Detail::Full,
    };
    let tools = engram::session::ToolSelection::parse(&global.tools, catalog())
        .map_err(anyhow::Error::msg)?;
    for op in &catalog().operations {
        let listed = if tools.includes(op) { "*" } else { " " };
        match detail {
            Detail::Name => println!("{}", op.name),
            Detail::Summary => println!(
                "{listed} {:<28} {:<10} {:<6} {}",
                op.name,
                op.layer,
                op.kind.as_str(),
                op.summary
            ),
            Detail::Full => {
                let entry = registry()
                    .get(&op.name)
                    .context("operation without handler")?;
                println!("{}", schema_document(entry));
            }
        }
    }
    if matches!(detail, Detail::Summary) {
        println!("\n* = listed under --tools {}", global.tools);
    }
    Ok(ExitCode::SUCCESS)
}

/// `engram schemas`: checks that the files in `dir` are the schemas the
/// registry generates, or (`write`) rewrites them.
fn schemas(write: bool, dir: &Path) -> anyhow::Result<ExitCode> {
    if write {
        std::fs::create_dir_all(dir)?;
    }
    let mut stale = Vec::new();
    for entry in registry().entries() {
        let path = dir.join(format!("{}.json", entry.name));
        let text = schema_document(entry);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(entry.name.to_string());
            if write {
                std::fs::write(&path, text)?;
            }
        }
    }
    // Files for operations that no longer exist.
    for file in std::fs::read_dir(dir)? {
        let path = file?.path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if path.extension().is_some_and(|e| e == "json") && registry().get(stem).is_none() {
            stale.push(stem.to_string());
            if write {
                std::fs::remove_file(&path)?;
            }
        }
    }
    if write {
        eprintln!(
            "schemas: {} file(s) written or removed in {}",
            stale.len(),
            dir.display()
        );
        Ok(ExitCode::SUCCESS)
    } else if stale.is_empty() {
        eprintln!("schemas: all current");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "schemas stale: {}. Run: {REGENERATE_SCHEMAS}",
            stale.join(", ")
        );
        Ok(ExitCode::FAILURE)
    }
}
