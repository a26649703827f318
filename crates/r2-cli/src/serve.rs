//! `r2 serve`: the OpenAI-compatible routing gateway (`r2-serve`) on a TCP port.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use r2_router::{Options, R2Router};
use r2_serve::{AppState, ServeOptions};

use crate::logging::{self, LogFormat};
use crate::text::{self, EmbedderArgs};
use crate::RouterArgs;

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    router: RouterArgs,

    #[command(flatten)]
    embedder: EmbedderArgs,

    /// OpenAI-compatible chat API that chat completions are forwarded to, e.g.
    /// https://openrouter.ai/api/v1 [default: none; then only POST /v1/route routes, and chat
    /// completions answer 503]
    #[arg(long, value_name = "URL")]
    llm_api_base: Option<String>,

    /// API key for --llm-api-base [default: $OPENROUTER_API_KEY]; never printed
    #[arg(long, value_name = "KEY")]
    llm_api_key: Option<String>,

    /// Address to listen on (0.0.0.0 or :: to accept connections from other machines)
    #[arg(long, default_value = "127.0.0.1", value_name = "HOST")]
    host: String,

    /// Port to listen on (0 picks a free one; the address is printed on stderr)
    #[arg(long, default_value_t = 8080, value_name = "PORT")]
    port: u16,

    /// Key clients must send as `Authorization: Bearer <key>` on every endpoint but /healthz
    /// [default: $R2_SERVER_API_KEY; unset = no client authentication]; never printed
    #[arg(long, value_name = "KEY")]
    api_key: Option<String>,

    /// Default cost-quality trade-off in [0, 1] [default: the pool config's default_lambda];
    /// requests can override it
    #[arg(long = "lambda", visible_alias = "lambda_val", value_name = "F")]
    lambda: Option<f64>,

    /// Largest request body accepted, in bytes; larger ones get 413
    #[arg(long, default_value_t = r2_serve::DEFAULT_BODY_LIMIT, value_name = "BYTES")]
    body_limit: usize,

    /// Requests in flight on /v1/* at most; one more gets 429 at once. A request counts once its
    /// body has been read, until its answer has been sent
    #[arg(long, default_value_t = r2_serve::DEFAULT_MAX_CONCURRENCY, value_name = "N")]
    max_concurrency: usize,

    /// Open connections at most; more wait in the listen backlog until one closes. Each request
    /// may also hold a connection to the provider and one to the embedding server: keep 3 × N
    /// below the file-descriptor limit (`ulimit -n`, often 1024)
    #[arg(long, default_value_t = r2_serve::DEFAULT_MAX_CONNECTIONS, value_name = "N")]
    max_connections: usize,

    /// Seconds allowed for a request head (from the connection's start for its first request,
    /// from the first byte for later ones); past it the connection is closed
    #[arg(long, default_value_t = r2_serve::DEFAULT_HEADER_TIMEOUT.as_secs_f64(), value_name = "SECONDS")]
    header_timeout: f64,

    /// Seconds allowed for a whole request body; past it the answer is 408 and the connection is
    /// closed
    #[arg(long, default_value_t = r2_serve::DEFAULT_BODY_TIMEOUT.as_secs_f64(), value_name = "SECONDS")]
    body_timeout: f64,

    /// Seconds a keep-alive connection may wait for its next request before it is closed
    #[arg(long, default_value_t = r2_serve::DEFAULT_IDLE_TIMEOUT.as_secs_f64(), value_name = "SECONDS")]
    idle_timeout: f64,

    /// Seconds a client may take no byte of its answer before its connection is closed
    #[arg(long, default_value_t = r2_serve::DEFAULT_SEND_TIMEOUT.as_secs_f64(), value_name = "SECONDS")]
    send_timeout: f64,

    /// Seconds the requests in flight get to finish after SIGTERM/SIGINT; then the remaining
    /// connections are closed and the server exits (0: at once)
    #[arg(long, default_value_t = r2_serve::DEFAULT_DRAIN_TIMEOUT.as_secs_f64(), value_name = "SECONDS")]
    drain_timeout: f64,

    /// Which user message a conversation is routed on: `first` (every turn of a conversation on
    /// the same model and budget, on any replica) or `last`; a request's `r2.route_on` overrides
    #[arg(long, default_value = "first", value_name = "first|last")]
    route_on: r2_router::RouteOn,

    /// Other models tried, next-best first along the ranked options, when the chosen one's call
    /// fails in a way another model may fix (connection, timeout, 5xx, 429, unknown or
    /// unavailable model); 0: none
    #[arg(long, default_value_t = r2_router::chat::DEFAULT_FALLBACKS, value_name = "N")]
    fallbacks: usize,

    /// Seconds all attempts of one request (the choice and its fallbacks) may take together;
    /// past it the client gets 504
    #[arg(long, default_value_t = r2_router::chat::DEFAULT_DEADLINE.as_secs_f64(), value_name = "SECS")]
    deadline: f64,

    /// The pool model savings are measured against (r2_reference_spend_usd_total, /v1/r2/stats)
    /// [default: the available model with the highest output price]
    #[arg(long, value_name = "MODEL")]
    reference_model: Option<String>,

    /// Put the routed text in the access log (it never is by default)
    #[arg(long)]
    log_prompts: bool,

    /// Seconds allowed for the provider's answer (for a stream: for its headers, then for each
    /// next piece); past it the client gets 504
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
    provider_timeout: f64,

    /// Retries of a provider call after HTTP 429, 5xx or a connection error (never once a stream
    /// has started)
    #[arg(long, default_value_t = 1, value_name = "N")]
    provider_retries: u32,

    /// In-process embedder: tokens per forward pass at most. Concurrent requests that wait while
    /// the model runs share the next pass, whole, while their token counts sum to at most this (a
    /// longer request runs alone)
    #[arg(long, default_value_t = r2_router::r2_embed::DEFAULT_MAX_BATCH_TOKENS, value_name = "N")]
    max_batch_tokens: usize,

    /// In-process embedder: texts waiting for a forward pass at most; a request that would pass
    /// it gets 429 at once
    #[arg(long, default_value_t = r2_router::r2_embed::DEFAULT_MAX_QUEUED, value_name = "N")]
    max_queued_embeddings: usize,

    /// Log lines on stderr: human-readable text, or one JSON object a line (for log collectors).
    /// Failed requests (5xx) are logged at `error`; RUST_LOG=r2_serve=debug logs every request
    #[arg(long, value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    log_format: LogFormat,
}

pub fn run(args: ServeArgs) -> Result<()> {
    let _flushed = logging::init_server(args.log_format);
    let api_key = match args.api_key {
        Some(key) => Some(key),
        None => std::env::var(r2_serve::API_KEY_ENV).ok(),
    };
    if api_key.as_ref().is_some_and(|k| k.trim().is_empty()) {
        bail!(
            "the client API key (--api-key or ${}) is empty: give a key, or unset it to serve \
             without authentication",
            r2_serve::API_KEY_ENV
        );
    }
    let timeout = seconds("--provider-timeout", args.provider_timeout)?;
    let header_timeout = seconds("--header-timeout", args.header_timeout)?;
    let body_timeout = seconds("--body-timeout", args.body_timeout)?;
    let idle_timeout = seconds("--idle-timeout", args.idle_timeout)?;
    let send_timeout = seconds("--send-timeout", args.send_timeout)?;
    let drain_timeout = Duration::try_from_secs_f64(args.drain_timeout)
        .ok()
        .with_context(|| {
            format!(
                "--drain-timeout must be a number of seconds ≥ 0, got {}",
                args.drain_timeout
            )
        })?;
    if args.max_connections == 0 {
        bail!("--max-connections must be at least 1");
    }
    let options = Options {
        checkpoints: args.router.checkpoints.clone(),
        hf_repo: args.router.hf_repo.clone(),
        config: args.router.config.clone(),
        embed_url: args.embedder.embed_url.clone(),
        embedding_model_dir: args.embedder.embedding_model_dir.clone(),
        embed_batch_size: Some(args.embedder.embed_batch_size),
        embed_batching: r2_router::r2_embed::BatchOptions {
            max_batch_tokens: args.max_batch_tokens,
            max_queued: args.max_queued_embeddings,
        },
        llm_api_base: args.llm_api_base.clone(),
        llm_api_key: args.llm_api_key.clone().map(r2_router::r2_llm::ApiKey::new),
        llm_options: Some(r2_router::r2_llm::LlmOptions {
            timeout,
            max_retries: args.provider_retries,
            // A gateway should not hold a request for a minute on the provider's say-so.
            max_retry_after: Duration::from_secs(10),
            ..r2_router::r2_llm::LlmOptions::default()
        }),
        lambda: args.lambda,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let serve_options = ServeOptions {
        api_key,
        body_limit: args.body_limit,
        max_concurrency: args.max_concurrency,
        max_connections: args.max_connections,
        header_timeout,
        body_timeout,
        idle_timeout,
        send_timeout,
        drain_timeout,
        route_on: args.route_on,
        fallback: text::deadline_policy(args.fallbacks, args.deadline)?,
        reference_model: args.reference_model.clone(),
        log_prompts: args.log_prompts,
    };
    let runtime = text::runtime()?;
    runtime.block_on(async move {
        let r2 = R2Router::load(options)
            .await
            .with_context(|| format!("loading the router ({})", RouterArgs::HINT))?;
        let state = AppState::new(r2, serve_options)
            .await
            .context("setting up the embedder")?;
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
        let address = listener.local_addr()?;
        // Printed as it is, whatever the log format: the first line says where to connect.
        logging::flush();
        eprintln!(
            "r2 serve: listening on http://{address} ({})",
            summary(&state)
        );
        r2_serve::serve(listener, state, shutdown(drain_timeout))
            .await
            .context("serving")?;
        tracing::info!("r2 serve: stopped");
        Ok(())
    })
}

/// A positive number of seconds given to `flag`.
fn seconds(flag: &str, value: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|t| !t.is_zero())
        .with_context(|| format!("{flag} must be a positive number of seconds, got {value}"))
}

/// Models, λ, authentication and provider, for the line printed when listening (no keys).
fn summary(state: &AppState) -> String {
    let r2 = state.r2();
    let candidates = state.default_candidates();
    let pool = r2.pool().models.len();
    let routed = if candidates.len() == pool {
        "routing to all of them".to_owned()
    } else {
        format!("routing to {}: {}", candidates.len(), candidates.join(", "))
    };
    let provider = match r2.llm() {
        Some(llm) => format!("provider {}", llm.url()),
        None => "no provider: chat completions off".to_owned(),
    };
    let auth = if state.auth_enabled() { "on" } else { "off" };
    format!(
        "models: {} + {pool} pool models, {routed}; λ {}; client auth {auth}; {provider}; up to \
         {} connections",
        r2_serve::ROUTER_MODEL,
        r2.lambda(),
        state.options().max_connections
    )
}

/// The first SIGINT/SIGTERM starts a graceful shutdown; a second one ends the process at once.
async fn shutdown(drain_timeout: Duration) {
    r2_serve::shutdown_signal().await;
    tracing::info!(
        "r2 serve: shutting down: waiting up to {drain_timeout:?} for the requests in flight \
         (signal again to stop now)"
    );
    tokio::spawn(async {
        r2_serve::shutdown_signal().await;
        tracing::info!("r2 serve: stopped without waiting");
        logging::flush();
        std::process::exit(130);
    });
}
