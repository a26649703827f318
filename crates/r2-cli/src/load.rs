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
            .map(r2_llm::ApiKey::new),
        lambda,
        progress: std::io::stderr().is_terminal(),
        ..Options::default()
    };
    runtime
        .block_on(R2Router::load(options))
        .with_context(|| format!("loading the router ({})", RouterArgs::HINT))
}
