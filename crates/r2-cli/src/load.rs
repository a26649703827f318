//! Turning command-line arguments into a loaded [`R2Router`].

use std::io::IsTerminal;

use anyhow::{Context, Result};
use r2_router::{Options, R2Router};

use crate::text::{EmbedderArgs, LlmArgs};
use crate::RouterArgs;

/// Loads the pool, the router (fetching the released checkpoints on first use) and the chat client.
pub fn router(
    runtime: &tokio::runtime::Runtime,
    router: &RouterArgs,
    embedder: &EmbedderArgs,
    llm: Option<&LlmArgs>,
    lambda: Option<f64>,
) -> Result<R2Router> {
    let options = Options {
        checkpoints: router.checkpoints.clone(),
        hf_repo: router.hf_repo.clone(),
        config: router.config.clone(),
        embed_url: embedder.embed_url.clone(),
        embedding_model_dir: embedder.embedding_model_dir.clone(),
        embed_batch_size: Some(embedder.embed_batch_size),
        llm_api_base: llm.and_then(|l| l.llm_api_base.clone()),
        llm_api_key: llm
            .and_then(|l| l.llm_api_key.clone())
            .map(r2_router::r2_llm::ApiKey::new),
        lambda,
        progress: std::io::stderr().is_terminal(),
        ..Options::default()
    };
    runtime
        .block_on(R2Router::load(options))
        .map_err(with_hint)
        .context("loading the router")
}

/// What to tell a user of the command line about a library error: the flags that fix it.
pub fn hint(e: &r2_router::Error) -> Option<&'static str> {
    match e {
        r2_router::Error::NothingAvailable => Some("pass --all-models or --models"),
        r2_router::Error::NoLocalEmbedding => Some("give an embeddings server with --embed-url"),
        r2_router::Error::Checkpoints(_)
        | r2_router::Error::Fetch(_)
        | r2_router::Error::Hub(_) => Some(RouterArgs::HINT),
        r2_router::Error::Llm(
            r2_router::r2_llm::Error::Unauthorized { .. }
            | r2_router::r2_llm::Error::InvalidApiKey { .. },
        ) => Some("pass the key with --llm-api-key or set OPENROUTER_API_KEY"),
        r2_router::Error::Embed(r2_router::r2_embed::Error::Download { .. }) => Some(
            "or pass --embedding-model-dir DIR (a folder with config.json, tokenizer.json and \
             model.safetensors) or --embed-url URL (a vLLM server)",
        ),
        _ => None,
    }
}

/// `e` with the command-line hint that fixes it, if there is one.
pub fn with_hint(e: r2_router::Error) -> anyhow::Error {
    match hint(&e) {
        Some(hint) => anyhow::anyhow!("{e} ({hint})"),
        None => anyhow::Error::new(e),
    }
}
