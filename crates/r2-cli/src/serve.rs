//! `r2 serve`: the OpenAI-compatible routing gateway (`r2-serve`) on a TCP port.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use r2_router::{Options, R2Router};
use r2_serve::{AppState, ServeOptions};

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

    /// Requests in flight on /v1/* at most; one more gets 429 at once
    #[arg(long, default_value_t = r2_serve::DEFAULT_MAX_CONCURRENCY, value_name = "N")]
    max_concurrency: usize,

    /// Seconds allowed for the provider's answer (for a stream: for its headers, then for each
    /// next piece); past it the client gets 504
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
    provider_timeout: f64,

    /// Retries of a provider call after HTTP 429, 5xx or a connection error (never once a stream
    /// has started)
    #[arg(long, default_value_t = 1, value_name = "N")]
    provider_retries: u32,
}

pub fn run(args: ServeArgs) -> Result<()> {
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
    let timeout = Duration::try_from_secs_f64(args.provider_timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .with_context(|| {
            format!(
                "--provider-timeout must be a positive number of seconds, got {}",
                args.provider_timeout
            )
        })?;
    let options = Options {
        checkpoints: args.router.checkpoints.clone(),
        config: args.router.config.clone(),
        embed_url: args.embedder.embed_url.clone(),
        embedding_model_dir: args.embedder.embedding_model_dir.clone(),
        embed_batch_size: Some(args.embedder.embed_batch_size),
        llm_api_base: args.llm_api_base.clone(),
        llm_api_key: args.llm_api_key.clone().map(r2_llm::ApiKey::new),
        llm_options: Some(r2_llm::LlmOptions {
            timeout,
            max_retries: args.provider_retries,
            // A gateway should not hold a request for a minute on the provider's say-so.
            max_retry_after: Duration::from_secs(10),
            ..r2_llm::LlmOptions::default()
        }),
        lambda: args.lambda,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let serve_options = ServeOptions {
        api_key,
        body_limit: args.body_limit,
        max_concurrency: args.max_concurrency,
    };
    let runtime = text::runtime()?;
    runtime.block_on(async move {
        let r2 = R2Router::load(options)
            .await
            .context("loading the router")?;
        let state = AppState::new(r2, serve_options)
            .await
            .context("setting up the embedder")?;
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
        let address = listener.local_addr()?;
        eprintln!(
            "r2 serve: listening on http://{address} ({})",
            summary(&state)
        );
        r2_serve::serve(listener, state, shutdown())
            .await
            .context("serving")?;
        eprintln!("r2 serve: stopped");
        Ok(())
    })
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
        "models: {} + {pool} pool models, {routed}; λ {}; client auth {auth}; {provider}",
        r2_serve::ROUTER_MODEL,
        r2.lambda()
    )
}

/// The first SIGINT/SIGTERM starts a graceful shutdown; a second one ends the process at once.
async fn shutdown() {
    r2_serve::shutdown_signal().await;
    eprintln!(
        "r2 serve: shutting down: waiting for the requests in flight (signal again to stop now)"
    );
    tokio::spawn(async {
        r2_serve::shutdown_signal().await;
        eprintln!("r2 serve: stopped without waiting");
        std::process::exit(130);
    });
}
