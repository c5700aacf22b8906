//! `engram token`, `engram audit` and `engram health`: what an operator runs
//! beside a server, which may be running. Tokens and the audit trail are read
//! and written through a connection of their own to the data dir's database
//! (`store::Direct`), not through the data dir's lock.

use std::process::ExitCode;

use anyhow::Context;
use engram::auth::{self, Scope};
use engram::model::now_micros;
use engram::store::{AuditFilter, Direct, NewToken, TokenRecord};
use engram::timespec::TimeSpec;

use super::super::{GlobalArgs, ScopeArg, TokenCommand, config, fixed_namespace};

/// The store `config` names, opened for the command line.
fn open_store(config: &engram::config::Config) -> anyhow::Result<Direct> {
    match &config.store_url {
        Some(_) => Direct::open(config).context("cannot open the PostgreSQL store"),
        None => Direct::open(config)
            .with_context(|| format!("cannot open the data dir {}", config.data_dir.display())),
    }
}

/// `engram migrate`: brings the store's schema up to this build's and says
/// which migrations it holds.
pub fn migrate(global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let config = config(global)?;
    let db = open_store(&config)?;
    for (version, name) in db.migrations()? {
        println!("{version:>4}  {name}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `engram token create|list|revoke`.
pub fn token(global: &GlobalArgs, command: TokenCommand) -> anyhow::Result<ExitCode> {
    let config = config(global)?;
    let db = open_store(&config)?;
    let now = now_micros();
    match command {
        TokenCommand::Create {
            scope,
            label,
            expires,
        } => {
            let scope = match scope {
                ScopeArg::Read => Scope::Read,
                ScopeArg::Write => Scope::Write,
                ScopeArg::Admin => Scope::Admin,
            };
            let namespace = match global.namespace.as_str() {
                "auto" => anyhow::bail!(
                    "a token is bound to one namespace: name it with --namespace NAME"
                ),
                ns => ns.to_string(),
            };
            let minted = auth::mint().context("cannot get random bytes for the token")?;
            let label = label.unwrap_or_else(|| format!("{namespace}-{scope}-{}", &minted.id[..8]));
            anyhow::ensure!(
                !label.trim().is_empty() && label.len() <= 100,
                "--label must be 1 to 100 characters"
            );
            let expires_at = expires.as_deref().map(expiry).transpose()?;
            let record = db.create_token(
                NewToken {
                    id: minted.id,
                    label,
                    namespace,
                    scope,
                    secret_hash: minted.secret_hash,
                    expires_at,
                },
                now,
            )?;
            eprintln!(
                "token {:?} for namespace {:?}, scope {}{}. It is shown once; engram keeps only \
                 its hash. Clients send it as `Authorization: Bearer <token>`:",
                record.label,
                record.namespace,
                record.scope,
                record
                    .expires_at
                    .map(|e| format!(", expires {}", e.to_rfc3339()))
                    .unwrap_or_default()
            );
            println!("{}", minted.token);
        }
        TokenCommand::List { json } => {
            let tokens = db.tokens()?;
            if json {
                for t in &tokens {
                    println!("{}", serde_json::to_string(t)?);
                }
            } else {
                print_tokens(&tokens, now);
            }
        }
        TokenCommand::Revoke { label_or_id } => {
            let record = db.revoke_token(&label_or_id, now)?;
            eprintln!(
                "revoked token {:?} ({}) of namespace {:?}: its next request is refused",
                record.label, record.id, record.namespace
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// When a token made now with `--expires text` stops working.
fn expiry(text: &str) -> anyhow::Result<i64> {
    let at = TimeSpec::parse(&format!("in {text}"))
        .or_else(|_| TimeSpec::parse(text))
        .map_err(|_| {
            anyhow::anyhow!("cannot read --expires {text:?}: give a duration (30d, 12h, 2w) or a time (RFC 3339)")
        })?;
    anyhow::ensure!(
        at.micros() > now_micros(),
        "--expires {text:?} is in the past"
    );
    Ok(at.micros())
}

fn print_tokens(tokens: &[TokenRecord], now: i64) {
    let day = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map_or("-".to_string(), |t| t.format("%Y-%m-%d %H:%M").to_string())
    };
    println!(
        "{:<16} {:<24} {:<16} {:<6} {:<16} {:<16} {:<16} state",
        "id", "label", "namespace", "scope", "created", "expires", "last used"
    );
    for t in tokens {
        println!(
            "{:<16} {:<24} {:<16} {:<6} {:<16} {:<16} {:<16} {}",
            t.id,
            t.label,
            t.namespace,
            t.scope.as_str(),
            day(Some(t.created_at)),
            day(t.expires_at),
            day(t.last_used_at),
            t.unusable(now).unwrap_or("active"),
        );
    }
}

/// What `engram audit` prints.
#[derive(clap::Args)]
pub struct AuditArgs {
    /// Most entries printed.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Only writes by this operation.
    #[arg(long)]
    operation: Option<String>,
    /// Only writes made with the token of this label.
    #[arg(long)]
    token: Option<String>,
    /// Only writes since this time (RFC 3339, 2026-11-24, "2h ago").
    #[arg(long)]
    since: Option<String>,
    /// Every namespace's writes, not only --namespace's.
    #[arg(long)]
    all_namespaces: bool,
    /// One JSON object a line instead of a table.
    #[arg(long)]
    json: bool,
}

/// `engram audit`: the audit trail, newest first.
pub fn audit(global: &GlobalArgs, args: AuditArgs) -> anyhow::Result<ExitCode> {
    let config = config(global)?;
    let db = open_store(&config)?;
    let since = args
        .since
        .as_deref()
        .map(TimeSpec::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let filter = AuditFilter {
        operation: args.operation,
        token: args.token,
        since: since.map(TimeSpec::micros),
        ..AuditFilter::default()
    };
    let namespace = (!args.all_namespaces).then(|| fixed_namespace(&config));
    let rows = db.audit(namespace.as_deref(), filter, args.limit)?;
    for (namespace, entry) in rows {
        if args.json {
            let mut value = serde_json::to_value(&entry)?;
            value["namespace"] = namespace.into();
            println!("{value}");
            continue;
        }
        let records: Vec<String> = entry
            .records
            .iter()
            .map(|r| format!("{} {} {}", r.change, r.kind.as_str(), r.id))
            .collect();
        println!(
            "{}  {:<12} {:<28} session {:<36} token {:<16} {}",
            entry.at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
            namespace,
            entry.operation,
            if entry.session_id.is_empty() {
                "-"
            } else {
                &entry.session_id
            },
            entry.token.as_deref().unwrap_or("-"),
            records.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `engram health`: GETs `url` (plain HTTP) and exits 0 on a 200.
pub fn health(url: &str) -> anyhow::Result<ExitCode> {
    let uri: http::Uri = url
        .parse()
        .with_context(|| format!("cannot read the URL {url:?}"))?;
    anyhow::ensure!(
        uri.scheme_str() == Some("http"),
        "engram health speaks plain HTTP (the server's own port), not {url:?}"
    );
    let host = uri.host().context("the URL names no host")?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let status = runtime.block_on(async {
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            get(&host, port, uri.clone()),
        )
        .await
        .map_err(|_| anyhow::anyhow!("no answer from {url} within 5 s"))?
    })?;
    if status == http::StatusCode::OK {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("engram health: {url} answered {status}");
        Ok(ExitCode::FAILURE)
    }
}

async fn get(host: &str, port: u16, uri: http::Uri) -> anyhow::Result<http::StatusCode> {
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .with_context(|| format!("cannot connect to {host}:{port}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let request = http::Request::get(path)
        .header(http::header::HOST, format!("{host}:{port}"))
        .body(String::new())?;
    Ok(sender.send_request(request).await?.status())
}
